//! The pods of this node, from the API server: one watch (`fieldSelector=spec.nodeName=NODE`),
//! relisted by kube's watcher when it is lost, its events passed to the agent's loop.

use std::{
    pin::pin,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1 as api;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc;

use super::{Kubernetes, Pod};

/// What changed in the node's pods.
#[derive(Debug)]
pub enum PodEvent {
    /// The whole list: the first one, or after the watch was lost.
    Resync(Vec<Pod>),
    Applied(Pod),
    Deleted {
        uid: String,
    },
}

/// The variable the DaemonSet sets from the downward API (`spec.nodeName`).
pub const NODE_NAME_VAR: &str = "K8S_NODE_NAME";

/// Watch errors are logged at most this often (the watcher retries with backoff meanwhile).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// The node to watch, or why the layer stays off. In a pod the API is found through
/// `KUBERNETES_SERVICE_HOST` and the service account; outside one (an agent under systemd on
/// a node), through `KUBECONFIG`.
pub fn node_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let set = |key: &str| env(key).filter(|v| !v.trim().is_empty());
    if set("KUBERNETES_SERVICE_HOST").is_none() && set("KUBECONFIG").is_none() {
        return Err(
            "not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set) and no \
                    KUBECONFIG is given"
                .into(),
        );
    }
    set(NODE_NAME_VAR)
        .map(|n| n.trim().to_string())
        .ok_or_else(|| {
            format!(
                "{NODE_NAME_VAR} is not set (the DaemonSet sets it from spec.nodeName; on a host, \
             set it to the node's name)"
            )
        })
}

/// Starts the layer: the node's name from the environment, an API client, and the watch.
/// Off (with its reason logged once) when any of them is missing.
pub async fn start(
    env: &dyn Fn(&str) -> Option<String>,
) -> (Kubernetes, Option<mpsc::Receiver<PodEvent>>) {
    let node = match node_from_env(env) {
        Ok(node) => node,
        Err(reason) => {
            tracing::info!("Kubernetes metadata off: {reason}");
            return (Kubernetes::off(reason), None);
        }
    };
    crate::export::transport::install_crypto_provider();
    match Client::try_default().await {
        Ok(client) => {
            tracing::info!("Kubernetes metadata on: watching the pods of node {node}");
            let events = spawn(client, node.clone());
            (Kubernetes::on(node), Some(events))
        }
        Err(e) => {
            let reason = format!("no Kubernetes API client: {e}");
            tracing::warn!("Kubernetes metadata off: {reason}");
            (Kubernetes::off(reason), None)
        }
    }
}

/// Watches the pods of `node` through `client` until the receiver is dropped.
pub fn spawn(client: Client, node: String) -> mpsc::Receiver<PodEvent> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(watch(client, node, tx));
    rx
}

async fn watch(client: Client, node: String, tx: mpsc::Sender<PodEvent>) {
    let api: Api<api::Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = pin!(watcher(api, config).default_backoff());
    let mut listing = Vec::new();
    let mut last_error: Option<Instant> = None;
    while let Some(event) = events.next().await {
        let out = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(pod)) => {
                listing.extend(Pod::from_api(&pod));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                tracing::info!("Kubernetes: {} pod(s) on node {node}", listing.len());
                PodEvent::Resync(std::mem::take(&mut listing))
            }
            Ok(watcher::Event::Apply(pod)) => match Pod::from_api(&pod) {
                Some(pod) => PodEvent::Applied(pod),
                None => continue,
            },
            Ok(watcher::Event::Delete(pod)) => match pod.metadata.uid {
                Some(uid) => PodEvent::Deleted { uid },
                None => continue,
            },
            Err(e) => {
                if last_error.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
                    last_error = Some(Instant::now());
                    tracing::warn!(
                        "Kubernetes pod watch failed (retrying; pod metadata may be stale): {e}"
                    );
                }
                continue;
            }
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_layer_says_why_it_is_off() {
        let e = node_from_env(&env(&[])).unwrap_err();
        assert!(e.contains("KUBERNETES_SERVICE_HOST is not set"), "{e}");
        let e = node_from_env(&env(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")])).unwrap_err();
        assert!(e.contains("K8S_NODE_NAME is not set"), "{e}");
        let e = node_from_env(&env(&[("KUBECONFIG", "/k"), ("K8S_NODE_NAME", " ")])).unwrap_err();
        assert!(e.contains("K8S_NODE_NAME is not set"), "{e}");
    }

    #[test]
    fn in_a_pod_or_with_a_kubeconfig_it_watches_the_named_node() {
        let in_pod = env(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("K8S_NODE_NAME", "node-a"),
        ]);
        assert_eq!(node_from_env(&in_pod), Ok("node-a".into()));
        let on_host = env(&[
            ("KUBECONFIG", "/etc/kubeconfig"),
            ("K8S_NODE_NAME", "node-b"),
        ]);
        assert_eq!(node_from_env(&on_host), Ok("node-b".into()));
    }
}
