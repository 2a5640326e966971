//! Kubernetes metadata end to end: the real agent, a real process in a cgroup named as
//! containerd names a pod's container, and the API server's pod list and watch replayed from
//! recorded-format responses (tests/fixtures/kubernetes). And on a plain host, the layer off.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tracer_e2e::{
    AttrValue, OtlpReceiver,
    harness::{Agent, Service, TempDir, curl, is_root, root, run_args},
    kube_api::{ApiReplay, ContainerCgroup},
};

/// The Deployment pod of the fixtures, and its `checkout` container.
const POD_UID: &str = "3f6c1a2b-8e4d-4c7a-9b1e-5d2f0a6c8e41";
const CONTAINER_ID: &str = "c7761e58969f7edd498186641b2021e8477e1bcd230de4cf3435242da4a40d14";
const ANNOTATION: &str = "tracer.io/enabled";

fn fixture(name: &str) -> Result<String> {
    let path = root().join("tests/fixtures/kubernetes").join(name);
    std::fs::read_to_string(&path).with_context(|| path.display().to_string())
}

/// The node's pods, the checkout pod's annotation taken off: nothing matches at start.
fn pod_list_and_checkout() -> Result<(String, Value)> {
    let mut list: Value = serde_json::from_str(&fixture("node-1-pods.json")?)?;
    let items = list["items"].as_array_mut().context("items")?;
    let checkout = items
        .iter_mut()
        .find(|p| p["metadata"]["uid"] == POD_UID)
        .context("the checkout pod")?;
    let annotated = checkout.clone();
    checkout["metadata"]["annotations"]
        .as_object_mut()
        .context("annotations")?
        .remove(ANNOTATION);
    Ok((list.to_string(), annotated))
}

fn status(agent: &Agent) -> Result<Value> {
    Ok(serde_json::from_str(&agent.cli_ok(&["status", "--json"])?)?)
}

/// Polls `tracer status --json` until `done` holds.
async fn wait_for_status(
    agent: &Agent,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let json = status(agent)?;
        if done(&json) {
            return Ok(json);
        }
        ensure!(Instant::now() < deadline, "{what} did not happen: {json:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn process_of(json: &Value, pid: u32) -> Option<&Value> {
    json["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

fn traces(json: &Value, pid: u32) -> bool {
    process_of(json, pid).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_traced_as_the_watch_selects_them_and_carry_their_metadata() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let cgroup = ContainerCgroup::create(POD_UID, CONTAINER_ID)?;
    let service = Service::start(&["backend"])?;
    let pid = service.proc.pid();
    cgroup.add(pid)?;

    let (list, annotated) = pod_list_and_checkout()?;
    let api = ApiReplay::start(list)?;
    let dir = TempDir::new("kubeconfig")?;
    let kubeconfig = api.kubeconfig(dir.path())?;
    let receiver = OtlpReceiver::start_grpc().await?;
    let mut args = run_args(&[], &receiver);
    args.extend(["--pod-annotation".into(), format!("{ANNOTATION}=true")]);
    let agent = Agent::start(
        &args,
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("K8S_NODE_NAME", "node-1"),
        ],
    )?;
    ensure!(
        agent
            .log()
            .iter()
            .any(|l| l.contains("Kubernetes metadata on: watching the pods of node node-1")),
        "{:#?}",
        agent.log()
    );

    // The list arrives; the pod lacks the annotation, so its process is not traced.
    let json = wait_for_status(&agent, "the pod list", |j| {
        j["agent"]["kubernetes"] == "on: node node-1, 7 pod(s)"
    })
    .await?;
    ensure!(!traces(&json, pid), "{json:#}");
    let list_request = api
        .requests()
        .into_iter()
        .find(|r| !r.contains("watch="))
        .context("no list request")?;
    ensure!(
        list_request.contains("fieldSelector=spec.nodeName%3Dnode-1"),
        "the agent must list only its node's pods: {list_request}"
    );

    // The pod gets the annotation: its container's process is traced, in its pod.
    api.send(&serde_json::json!({"type": "MODIFIED", "object": annotated}))?;
    let json = wait_for_status(&agent, "tracing the annotated pod", |j| traces(j, pid)).await?;
    let process = process_of(&json, pid).unwrap();
    ensure!(
        process["pod"] == "shop/checkout-7d9f8b6c5d-x2k4q/checkout"
            && process["selector"] == "pod-annotation tracer.io/enabled=true"
            && process["service_name"] == "checkout",
        "{process:#}"
    );

    ensure!(curl(&service.url("/inventory/1"), &[])? == 200);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(15)).await?;
    let span = &spans[0];
    let resource = |key: &str| span.resource_attr(key).and_then(AttrValue::as_str);
    for (key, value) in [
        ("service.name", "checkout"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "checkout-7d9f8b6c5d-x2k4q"),
        ("k8s.pod.uid", POD_UID),
        ("k8s.container.name", "checkout"),
        ("k8s.deployment.name", "checkout"),
        ("k8s.replicaset.name", "checkout-7d9f8b6c5d"),
        ("k8s.node.name", "node-1"),
        ("host.name", "node-1"),
        ("container.id", CONTAINER_ID),
    ] {
        ensure!(resource(key) == Some(value), "{key}: {span:#?}");
    }

    // A process the container starts now is traced from its exec.
    let script = root().join("tests/fixtures/http_services.py");
    let joiner = Service::start_command(Command::new("sh").arg("-c").arg(format!(
        "echo $$ > {} && exec python3 {} backend",
        cgroup.procs_file().display(),
        script.display()
    )))?;
    let late = joiner.proc.pid();
    let json = wait_for_status(&agent, "tracing the container's new process", |j| {
        traces(j, late)
    })
    .await?;
    let process = process_of(&json, late).unwrap();
    ensure!(
        process["pod"] == "shop/checkout-7d9f8b6c5d-x2k4q/checkout"
            && process["selector"] == "pod-annotation tracer.io/enabled=true",
        "{process:#}"
    );

    // The annotation goes away (the fixture's next watch event): tracing stops.
    let watch = fixture("node-1-watch.jsonl")?;
    let removal: Value = serde_json::from_str(watch.lines().nth(2).context("event 3")?)?;
    ensure!(removal["object"]["metadata"]["uid"] == POD_UID);
    api.send(&removal)?;
    wait_for_status(&agent, "untracing the pod", |j| {
        !traces(j, pid) && !traces(j, late)
    })
    .await?;
    drop(joiner);
    drop(service);
    drop(cgroup);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_plain_host_the_layer_is_off_and_says_why() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let agent = Agent::start(&run_args(&[], &receiver), &[])?;
    let off =
        "Kubernetes metadata off: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set)";
    let log = agent.log();
    ensure!(
        log.iter().filter(|l| l.contains(off)).count() == 1,
        "{log:#?}"
    );
    let out = agent.cli(&["enable", "--namespace", "shop"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "{stderr}");
    ensure!(
        stderr.contains("Kubernetes metadata is off (not in a Kubernetes pod")
            && stderr.contains("namespace, pod label and pod annotation selectors need it"),
        "{stderr}"
    );
    ensure!(stderr.lines().count() == 1, "{stderr}");
    let json = status(&agent)?;
    ensure!(
        json["agent"]["kubernetes"]
            .as_str()
            .is_some_and(|k| k.starts_with("off: not in a Kubernetes pod")),
        "{json:#}"
    );
    Ok(())
}
