//! The agent's side of the pod watch: the pod cache follows the API server, traced processes
//! follow their pod's metadata, and pod selectors follow pods as they start, change and stop.

use std::{collections::HashSet, sync::Arc};

use super::{Agent, selectors};
use crate::{
    control::Selector,
    kubernetes::{Pod, PodEvent, cgroup::Container},
};

impl Agent {
    pub fn on_pod_event(&mut self, event: PodEvent) {
        let changed: Vec<(Option<Arc<Pod>>, Arc<Pod>)> = match event {
            PodEvent::Resync(pods) => {
                self.kubernetes.pods.replace_all(pods);
                let all = self.kubernetes.pods.pods().cloned();
                all.map(|pod| (None, pod)).collect()
            }
            PodEvent::Applied(pod) => {
                let uid = pod.uid.clone();
                let old = self.kubernetes.pods.apply(pod);
                let new = self.kubernetes.pods.get(&uid).cloned();
                new.map(|new| (old, new)).into_iter().collect()
            }
            PodEvent::Deleted { uid } => {
                // Its processes exit (or have); their spans keep the metadata they had.
                self.kubernetes.pods.remove(&uid);
                return;
            }
        };
        self.refresh_pod_metadata();
        let pod_selectors: Vec<(Selector, Option<String>)> = self
            .selectors
            .iter()
            .filter(|s| s.selector.is_pod_selector())
            .map(|s| (s.selector.clone(), s.service_name.clone()))
            .collect();
        if pod_selectors.is_empty() {
            return;
        }
        self.untrace_pods_no_longer_selected(changed.iter().map(|(_, new)| new));
        // Every process's container, read from /proc once for all the selectors.
        let mut containers = None;
        for (selector, service_name) in pod_selectors {
            // Only pods that now match and have new containers (or did not match before) can
            // have processes this selector does not trace yet.
            let candidates: Vec<Arc<Pod>> = changed
                .iter()
                .filter(|(old, new)| {
                    new.matches(&selector)
                        && old.as_ref().is_none_or(|old| {
                            !old.matches(&selector) || old.containers != new.containers
                        })
                })
                .map(|(_, new)| new.clone())
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let origin = selector.to_string();
            let containers = containers.get_or_insert_with(selectors::processes_in_containers);
            for pid in self.processes_in_pods(&selector, &candidates, containers) {
                if self.traced.contains_key(&pid) {
                    continue;
                }
                match self.trace(pid, &selector, service_name.clone(), origin.clone()) {
                    Ok(()) => tracing::info!("tracing pid {pid}: its pod matches {selector}"),
                    Err(e) => tracing::debug!("{selector}: pid {pid}: {e:#}"),
                }
            }
        }
    }

    /// The processes (not yet traced or traced) in the containers of `pods` that `selector`
    /// matches, among `containers` (`selectors::processes_in_containers`).
    pub(super) fn processes_in_pods(
        &self,
        selector: &Selector,
        pods: &[Arc<Pod>],
        containers: &[(u32, Container)],
    ) -> Vec<u32> {
        let matching: Vec<&Arc<Pod>> = pods.iter().filter(|p| p.matches(selector)).collect();
        if matching.is_empty() {
            return Vec::new();
        }
        let ids: HashSet<&str> = matching.iter().flat_map(|p| p.container_ids()).collect();
        let uids: HashSet<&str> = matching.iter().map(|p| p.uid.as_str()).collect();
        containers
            .iter()
            .filter(|(_, container)| {
                ids.contains(container.id.as_str())
                    // A container the pod's status does not list yet, placed by its cgroup's
                    // pod uid (see PodCache::find).
                    || container.pod_uid.as_deref().is_some_and(|uid| {
                        uids.contains(uid)
                            && self
                                .kubernetes
                                .pods
                                .find(container)
                                .is_some_and(|(pod, _)| pod.uid == uid)
                    })
            })
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Traced processes whose pod metadata changed (a container got its name, the pod became
    /// known after the process was traced) get it for their next spans.
    fn refresh_pod_metadata(&mut self) {
        let mut updates = Vec::new();
        for (pid, t) in &self.traced {
            let pod = self.kubernetes.context(t.meta.container.as_ref());
            if pod.is_some() && pod != t.meta.pod {
                let mut meta = (*t.meta).clone();
                if !meta.service_name_is_explicit {
                    // The executable's name again, unless the pod names the workload.
                    meta.service_name = meta.executable_name.clone();
                }
                updates.push((*pid, Arc::new(meta.in_pod(pod))));
            }
        }
        for (pid, meta) in updates {
            self.pipeline.add_process(meta.clone());
            if let Some(t) = self.traced.get_mut(&pid) {
                t.meta = meta;
            }
        }
    }

    /// A pod that lost the label or annotation its processes were traced for (or a namespace
    /// selector's pod that moved, which pods cannot) stops being traced.
    fn untrace_pods_no_longer_selected<'a>(&mut self, pods: impl Iterator<Item = &'a Arc<Pod>>) {
        let uids: HashSet<&str> = pods.map(|p| p.uid.as_str()).collect();
        let stale: Vec<(u32, Selector)> = self
            .traced
            .iter()
            .filter(|(_, t)| t.selector.is_pod_selector())
            .filter_map(|(pid, t)| {
                let pod = t.meta.pod.as_ref()?;
                let current = self.kubernetes.pods.get(&pod.pod.uid)?;
                (uids.contains(current.uid.as_str()) && !current.matches(&t.selector))
                    .then(|| (*pid, t.selector.clone()))
            })
            .collect();
        for (pid, selector) in stale {
            tracing::info!("stopped tracing pid {pid}: its pod no longer matches {selector}");
            self.untrace(pid);
        }
    }
}
