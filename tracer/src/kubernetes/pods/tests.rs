//! Recorded-format API responses through kube's own decoding and the cache.

use k8s_openapi::List;
use kube::core::WatchEvent;

use super::*;
use crate::control::KeyValue;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/kubernetes")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The container id the fixtures give a container: the sha256 of its name.
fn id(container: &str) -> String {
    let ids = [
        (
            "checkout",
            "c7761e58969f7edd498186641b2021e8477e1bcd230de4cf3435242da4a40d14",
        ),
        (
            "envoy",
            "84532b306f259587c364bd7301e0813963d5b84fd27c9338f0862dab8f0499d7",
        ),
        (
            "migrate",
            "3bc801a33ea83df414e1aeb962a52412835be99db28668ec25de73fdd4733804",
        ),
        (
            "postgres",
            "a942b37ccfaf5a813b1432caa209a43b9d144e47ad0de1549c289c253e556cd5",
        ),
        (
            "report",
            "845e91831319e89c4d656bdb80c278ac09a7230d61e5dfd2e1b1fbb436ac8917",
        ),
        (
            "fluent-bit",
            "b4096a195e1b6039ba44347320431fecc94069b735e47f37b813bc8ddba9427c",
        ),
        (
            "legacy",
            "c49fea7425fa7f8699897a97c159c6690267d9003bb78c53fafa8fc15c325d84",
        ),
        (
            "shell",
            "ce635c4eabff5e4f56dba8fb1e39ca235530aa2b6b18533eef1af3862016c577",
        ),
        (
            "cart",
            "1c42ddc0285b9c25135be3bf345e6a041271b784b22a6f6cab6588dab93c5980",
        ),
    ];
    ids.iter()
        .find(|(n, _)| *n == container)
        .unwrap()
        .1
        .to_string()
}

fn node_pods() -> Vec<Pod> {
    let list: List<api::Pod> = serde_json::from_str(&fixture("node-1-pods.json")).unwrap();
    list.items.iter().filter_map(Pod::from_api).collect()
}

fn watch_events() -> Vec<WatchEvent<api::Pod>> {
    fixture("node-1-watch.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn cache() -> PodCache {
    let mut cache = PodCache::default();
    cache.replace_all(node_pods());
    cache
}

fn in_container(name: &str) -> Container {
    Container {
        id: id(name),
        pod_uid: None,
    }
}

fn owners(pod: &Pod) -> Vec<(&str, &str)> {
    pod.owners.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn containers_map_to_their_pod_and_name() {
    let cache = cache();
    assert!(cache.is_synced());
    assert_eq!(cache.len(), 7);
    let (pod, name) = cache.find(&in_container("envoy")).unwrap();
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str(), name.as_deref()),
        ("shop", "checkout-7d9f8b6c5d-x2k4q", Some("envoy"))
    );
    // Init containers count (their processes may still be running at enable time).
    let (pod, name) = cache.find(&in_container("migrate")).unwrap();
    assert_eq!(
        (pod.name.as_str(), name.as_deref()),
        ("checkout-7d9f8b6c5d-x2k4q", Some("migrate"))
    );
    // Runtime prefixes other than containerd's.
    assert_eq!(
        cache.find(&in_container("postgres")).unwrap().0.name,
        "postgres-0"
    );
    assert_eq!(
        cache.find(&in_container("fluent-bit")).unwrap().0.name,
        "fluent-bit-8xk2p"
    );
    // A container of no pod on this node (plain docker, another node's).
    let stranger = Container {
        id: "0".repeat(64),
        pod_uid: None,
    };
    assert!(cache.find(&stranger).is_none());
}

#[test]
fn workloads_come_from_owner_references() {
    let cache = cache();
    let pod = |c: &str| cache.find(&in_container(c)).unwrap().0;
    let checkout = pod("checkout");
    assert_eq!(
        owners(&checkout),
        [
            ("k8s.replicaset.name", "checkout-7d9f8b6c5d"),
            ("k8s.deployment.name", "checkout")
        ]
    );
    assert_eq!(checkout.workload_name(), "checkout");
    assert_eq!(
        owners(&pod("postgres")),
        [("k8s.statefulset.name", "postgres")]
    );
    assert_eq!(
        owners(&pod("report")),
        [
            ("k8s.job.name", "report-29540160"),
            ("k8s.cronjob.name", "report")
        ]
    );
    assert_eq!(pod("report").workload_name(), "report");
    assert_eq!(
        owners(&pod("fluent-bit")),
        [("k8s.daemonset.name", "fluent-bit")]
    );
    // A ReplicaSet made by hand has no pod-template-hash: no Deployment is invented.
    assert_eq!(
        owners(&pod("legacy")),
        [("k8s.replicaset.name", "legacy-rs")]
    );
    assert_eq!(pod("legacy").workload_name(), "legacy-rs");
    // A bare pod is its own workload.
    assert!(pod("shell").owners.is_empty());
    assert_eq!(pod("shell").workload_name(), "debug");
}

#[test]
fn pod_selectors_match_namespace_labels_and_annotations() {
    let cache = cache();
    let checkout = cache.find(&in_container("checkout")).unwrap().0;
    let kv = |s: &str| s.parse::<KeyValue>().unwrap();
    assert!(checkout.matches(&Selector::Namespace("shop".into())));
    assert!(!checkout.matches(&Selector::Namespace("batch".into())));
    assert!(checkout.matches(&Selector::PodLabel(kv("app=checkout"))));
    assert!(!checkout.matches(&Selector::PodLabel(kv("app=cart"))));
    assert!(checkout.matches(&Selector::PodAnnotation(kv("tracer.io/enabled=true"))));
    assert!(!checkout.matches(&Selector::PodAnnotation(kv("tracer.io/enabled=false"))));
    // A label is not an annotation, and other selectors are not about pods.
    assert!(!checkout.matches(&Selector::PodAnnotation(kv("app=checkout"))));
    assert!(!checkout.matches(&Selector::Exe("checkout".into())));
}

#[test]
fn a_container_being_created_is_placed_by_its_pod_uid() {
    let mut cache = cache();
    let cart_uid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let new_cart = Container {
        id: id("cart"),
        pod_uid: Some(cart_uid.into()),
    };
    // The pod lists its container without an id yet: placed by uid, without a name.
    let (pod, name) = cache.find(&new_cart).unwrap();
    assert_eq!((pod.name.as_str(), name), ("cart-5b7c9d8f6-m4n5p", None));
    // Once every container has an id, an unlisted one in the pod's cgroup is the sandbox.
    let sandbox = Container {
        id: "f".repeat(64),
        pod_uid: Some("3f6c1a2b-8e4d-4c7a-9b1e-5d2f0a6c8e41".into()),
    };
    assert!(cache.find(&sandbox).is_none());

    // The watch then reports the container's id.
    let WatchEvent::Modified(update) = &watch_events()[0] else {
        panic!("the first watch event modifies the cart pod")
    };
    let old = cache.apply(Pod::from_api(update).unwrap()).unwrap();
    assert_eq!(old.container_ids().count(), 0);
    let (pod, name) = cache.find(&new_cart).unwrap();
    assert_eq!(
        (pod.name.as_str(), name.as_deref()),
        ("cart-5b7c9d8f6-m4n5p", Some("cart"))
    );
}

#[test]
fn the_watch_changes_and_removes_pods() {
    let mut cache = cache();
    let events = watch_events();
    assert!(matches!(events[1], WatchEvent::Bookmark(_)));
    let WatchEvent::Modified(checkout) = &events[2] else {
        panic!("third event")
    };
    cache.apply(Pod::from_api(checkout).unwrap());
    let annotated = Selector::PodAnnotation("tracer.io/enabled=true".parse().unwrap());
    assert!(
        !cache
            .find(&in_container("checkout"))
            .unwrap()
            .0
            .matches(&annotated)
    );
    let WatchEvent::Deleted(debug) = &events[3] else {
        panic!("fourth event")
    };
    let removed = cache
        .remove(debug.metadata.uid.as_deref().unwrap())
        .unwrap();
    assert_eq!(removed.name, "debug");
    assert!(cache.find(&in_container("shell")).is_none());
    assert_eq!(cache.len(), 6);
    // Relisting replaces everything.
    cache.replace_all(Vec::new());
    assert!(cache.find(&in_container("envoy")).is_none());
}

#[test]
fn runtime_prefixes_are_stripped_and_empty_ids_ignored() {
    assert_eq!(strip_runtime("containerd://abc").as_deref(), Some("abc"));
    assert_eq!(strip_runtime("cri-o://abc").as_deref(), Some("abc"));
    assert_eq!(strip_runtime("docker://abc").as_deref(), Some("abc"));
    assert_eq!(strip_runtime(""), None);
    assert_eq!(strip_runtime("containerd://"), None);
}
