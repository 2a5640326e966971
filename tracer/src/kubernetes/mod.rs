//! Kubernetes metadata: which pod and container a traced process runs in, for its resource
//! attributes (`k8s.*`, `container.id`, and `service.name` from the workload) and for the pod
//! selectors (namespace, pod label, pod annotation).
//!
//! - [`cgroup`] reads a process's container id (and its pod's uid) from /proc/PID/cgroup.
//! - [`pods`] keeps the node's pods, indexed by container id.
//! - [`watch`] feeds that cache from the API server: one watch on the pods of this node.
//!
//! The layer is optional: on a host that is not a Kubernetes node, or without API access, it
//! is off, says why once at start, and everything else works as before.

pub mod cgroup;
pub mod pods;
pub mod watch;

use std::sync::Arc;

use anyhow::{Result, bail};

use cgroup::Container;
pub use pods::{Pod, PodCache};
pub use watch::PodEvent;

/// A traced process's place in Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodContext {
    pub pod: Arc<Pod>,
    /// None while the pod's status does not list the container yet.
    pub container_name: Option<String>,
    pub node_name: String,
}

impl PodContext {
    /// Its resource attributes, in the OpenTelemetry semantic conventions' names.
    pub fn attributes(&self) -> Vec<(&'static str, &str)> {
        let pod = &self.pod;
        let mut out = vec![
            ("k8s.namespace.name", pod.namespace.as_str()),
            ("k8s.pod.name", pod.name.as_str()),
            ("k8s.pod.uid", pod.uid.as_str()),
            ("k8s.node.name", self.node_name.as_str()),
        ];
        if let Some(name) = &self.container_name {
            out.push(("k8s.container.name", name));
        }
        out.extend(pod.owners.iter().map(|(key, name)| (*key, name.as_str())));
        out
    }
}

/// The agent's Kubernetes layer: on (with this node's pods) or off (and why).
#[derive(Debug)]
pub struct Kubernetes {
    /// The node's name when the layer is on.
    node: Option<String>,
    /// Why it is off.
    off_reason: String,
    pub pods: PodCache,
}

impl Kubernetes {
    pub fn on(node: String) -> Self {
        Self {
            node: Some(node),
            off_reason: String::new(),
            pods: PodCache::default(),
        }
    }

    pub fn off(reason: impl Into<String>) -> Self {
        Self {
            node: None,
            off_reason: reason.into(),
            pods: PodCache::default(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.node.is_some()
    }

    /// Pod selectors need the layer: an error that says why it is off.
    pub fn require(&self) -> Result<()> {
        if !self.is_on() {
            bail!(
                "Kubernetes metadata is off ({}): namespace, pod label and pod annotation \
                 selectors need it",
                self.off_reason
            );
        }
        Ok(())
    }

    /// The pod context of a process in `container`, if its pod is known.
    pub fn context(&self, container: Option<&Container>) -> Option<Arc<PodContext>> {
        let node = self.node.as_ref()?;
        let (pod, container_name) = self.pods.find(container?)?;
        Some(Arc::new(PodContext {
            pod,
            container_name,
            node_name: node.clone(),
        }))
    }

    /// One line for `tracer status`.
    pub fn summary(&self) -> String {
        match &self.node {
            Some(node) if self.pods.is_synced() => {
                format!("on: node {node}, {} pod(s)", self.pods.len())
            }
            Some(node) => format!("on: node {node}, waiting for the pod list"),
            None => format!("off: {}", self.off_reason),
        }
    }
}
