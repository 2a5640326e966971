//! The pods of this node, as the agent keeps them: the few facts resource attributes and pod
//! selectors need, indexed by pod uid and by container id.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::api::core::v1 as api;

use super::cgroup::Container;
use crate::control::Selector;

/// One pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Its containers (init and ephemeral ones too) by id, with their names. A container
    /// gets its id when the runtime has created it; restarts give it a new one.
    pub containers: Vec<ContainerStatus>,
    /// The controllers above the pod, nearest first, as resource attributes:
    /// `("k8s.replicaset.name", "web-5d4f8b7c9")`, `("k8s.deployment.name", "web")`.
    pub owners: Vec<(&'static str, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: String,
    /// The runtime's id without its `containerd://` (or `cri-o://`, `docker://`) prefix;
    /// None until the container is created.
    pub id: Option<String>,
}

impl Pod {
    /// The facts the agent keeps of an API pod; None for a pod without a uid or name (the
    /// API server always sets both).
    pub fn from_api(pod: &api::Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let labels = meta.labels.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        let containers = [
            status.and_then(|s| s.init_container_statuses.as_ref()),
            status.and_then(|s| s.container_statuses.as_ref()),
            status.and_then(|s| s.ephemeral_container_statuses.as_ref()),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            id: c.container_id.as_deref().and_then(strip_runtime),
        })
        .collect();
        Some(Self {
            uid: meta.uid.clone()?,
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone()?,
            owners: owners(pod, &labels),
            labels,
            annotations: meta.annotations.clone().unwrap_or_default(),
            containers,
        })
    }

    /// The name of what runs the pod: its Deployment, StatefulSet, DaemonSet, CronJob, Job or
    /// ReplicaSet, else the pod itself (a bare pod is its own workload).
    pub fn workload_name(&self) -> &str {
        self.owners
            .last()
            .map(|(_, name)| name.as_str())
            .unwrap_or(&self.name)
    }

    /// The name of the container with this id.
    pub fn container_name(&self, id: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.id.as_deref() == Some(id))
            .map(|c| c.name.as_str())
    }

    pub fn container_ids(&self) -> impl Iterator<Item = &str> {
        self.containers.iter().filter_map(|c| c.id.as_deref())
    }

    /// Whether a container of this pod has no id yet (it is being created).
    fn is_starting_a_container(&self) -> bool {
        self.containers.is_empty() || self.containers.iter().any(|c| c.id.is_none())
    }

    /// Whether a pod selector (namespace, pod label, pod annotation) picks this pod. Other
    /// selectors never do.
    pub fn matches(&self, selector: &Selector) -> bool {
        match selector {
            Selector::Namespace(namespace) => &self.namespace == namespace,
            Selector::PodLabel(kv) => self.labels.get(&kv.key) == Some(&kv.value),
            Selector::PodAnnotation(kv) => self.annotations.get(&kv.key) == Some(&kv.value),
            _ => false,
        }
    }
}

/// "containerd://0123…" → "0123…"; empty ids (a container not created yet) are None.
fn strip_runtime(id: &str) -> Option<String> {
    let bare = id.rsplit_once("://").map_or(id, |(_, id)| id);
    (!bare.is_empty()).then(|| bare.to_string())
}

/// The pod's controllers as resource attributes, nearest first.
///
/// A Deployment is never the pod's direct owner: it owns a ReplicaSet named
/// `<deployment>-<pod-template-hash>`, and the deployment controller labels the pods with that
/// hash. So a ReplicaSet owner whose name ends in `-<the pod's pod-template-hash label>` means
/// the Deployment named by the rest. This needs neither a ReplicaSet lookup nor RBAC on
/// ReplicaSets; a ReplicaSet created by hand carries no such label and stays a ReplicaSet.
/// Likewise the cronjob controller names its Jobs `<cronjob>-<scheduled minute>`: a Job owner
/// with a numeric suffix is reported as its CronJob too.
fn owners(pod: &api::Pod, labels: &BTreeMap<String, String>) -> Vec<(&'static str, String)> {
    let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    else {
        return Vec::new();
    };
    let name = owner.name.clone();
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let deployment = labels
                .get("pod-template-hash")
                .and_then(|hash| name.strip_suffix(hash.as_str())?.strip_suffix('-'))
                .filter(|d| !d.is_empty())
                .map(String::from);
            let mut out = vec![("k8s.replicaset.name", name)];
            out.extend(deployment.map(|d| ("k8s.deployment.name", d)));
            out
        }
        "Job" => {
            let cronjob = name
                .rsplit_once('-')
                .filter(|(prefix, minute)| {
                    !prefix.is_empty()
                        && minute.len() >= 8
                        && minute.bytes().all(|b| b.is_ascii_digit())
                })
                .map(|(prefix, _)| prefix.to_string());
            let mut out = vec![("k8s.job.name", name)];
            out.extend(cronjob.map(|c| ("k8s.cronjob.name", c)));
            out
        }
        "StatefulSet" => vec![("k8s.statefulset.name", name)],
        "DaemonSet" => vec![("k8s.daemonset.name", name)],
        // Other controllers (an operator's custom resource): no standard attribute.
        _ => Vec::new(),
    }
}

/// The pods of this node, from the API server's watch.
#[derive(Debug, Default)]
pub struct PodCache {
    pods: HashMap<String, Arc<Pod>>,
    /// Container id → pod uid.
    containers: HashMap<String, String>,
    /// Whether the initial list has arrived.
    synced: bool,
}

impl PodCache {
    /// Everything at once: the watch's initial list, or its relist after a lost watch.
    pub fn replace_all(&mut self, pods: Vec<Pod>) {
        self.pods.clear();
        self.containers.clear();
        for pod in pods {
            self.apply(pod);
        }
        self.synced = true;
    }

    /// A pod added or changed; returns the version it replaces.
    pub fn apply(&mut self, pod: Pod) -> Option<Arc<Pod>> {
        let old = self.remove(&pod.uid.clone());
        for id in pod.container_ids() {
            self.containers.insert(id.to_string(), pod.uid.clone());
        }
        self.pods.insert(pod.uid.clone(), Arc::new(pod));
        old
    }

    pub fn remove(&mut self, uid: &str) -> Option<Arc<Pod>> {
        let pod = self.pods.remove(uid)?;
        for id in pod.container_ids() {
            if self.containers.get(id).is_some_and(|owner| owner == uid) {
                self.containers.remove(id);
            }
        }
        Some(pod)
    }

    pub fn get(&self, uid: &str) -> Option<&Arc<Pod>> {
        self.pods.get(uid)
    }

    pub fn pods(&self) -> impl Iterator<Item = &Arc<Pod>> {
        self.pods.values()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The pod (and the container's name) a process's container belongs to. By container id
    /// first. A container the API does not list yet (just created: its id reaches the pod's
    /// status a moment later) is placed by the pod uid in its cgroup path, without a name;
    /// but only while one of that pod's containers has no id, so the pod's sandbox ("pause")
    /// process, which is in the pod's cgroup but in no listed container, is not.
    pub fn find(&self, container: &Container) -> Option<(Arc<Pod>, Option<String>)> {
        if let Some(pod) = self
            .containers
            .get(&container.id)
            .and_then(|uid| self.pods.get(uid))
        {
            let name = pod.container_name(&container.id).map(String::from);
            return Some((pod.clone(), name));
        }
        let pod = self.pods.get(container.pod_uid.as_deref()?)?;
        pod.is_starting_a_container().then(|| (pod.clone(), None))
    }
}

#[cfg(test)]
mod tests;
