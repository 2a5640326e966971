//! The deployment files, checked offline: no cluster runs here. The Kubernetes manifests and
//! the Helm chart's rendered output are validated against the Kubernetes API schemas that
//! kubernetes-validate bundles (strict: unknown fields fail), the chart is linted and rendered
//! by Helm's own engine (helm-python-sdk), and the systemd unit by `systemd-analyze verify`.
//! Each check is also run on a deliberately broken copy, which must fail.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tracer_e2e::harness::{TempDir, agent_binary, root};

/// The oldest and newest Kubernetes minor versions the manifests are checked against (the
/// chart declares kubeVersion >= 1.25; 1.30 is the oldest still widely run).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Runs kubernetes-validate in strict mode; Ok(output) when every resource passed.
fn validate(files: &[PathBuf], version: &str) -> Result<String, String> {
    // Through the same python3 that `cargo xtask setup` installed it for.
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            version,
        ])
        .args(files)
        .output()
        .map_err(|e| format!("kubernetes-validate did not start ({e}): run `cargo xtask setup`"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && !text.contains("ERROR") {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Kinds and names of the resources kubernetes-validate reported as passing.
fn passed(output: &str) -> Vec<String> {
    let mut list: Vec<String> = output
        .lines()
        .filter_map(|l| l.split(" passed for resource ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect();
    list.sort();
    list
}

#[test]
fn kubernetes_manifests_match_the_api_schemas() -> Result<()> {
    for version in KUBERNETES_VERSIONS {
        let out = validate(&manifests(), version).map_err(anyhow::Error::msg)?;
        assert_eq!(
            passed(&out),
            [
                "clusterrole/tracer",
                "clusterrolebinding/tracer",
                "configmap/tracer",
                "daemonset/tracer",
                "namespace/tracer",
                "serviceaccount/tracer",
            ],
            "{out}"
        );
    }
    Ok(())
}

#[test]
fn a_broken_manifest_fails_validation() -> Result<()> {
    let dir = TempDir::new("deploy-broken")?;
    let daemonset = std::fs::read_to_string(root().join("deploy/kubernetes/30-daemonset.yaml"))?;
    for (from, to, complaint) in [
        ("hostPID: true", "hostPid: true", "'hostPid' was unexpected"),
        (
            r#"add: ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"]"#,
            "add: BPF",
            "is not of type 'array'",
        ),
        ("memory: 512Mi", "memory: [512Mi]", "memory"),
    ] {
        ensure!(
            daemonset.contains(from),
            "the manifest no longer has {from:?}"
        );
        let broken = dir.path().join("daemonset.yaml");
        std::fs::write(&broken, daemonset.replace(from, to))?;
        let err = validate(&[broken], "1.37.0").expect_err(to);
        assert!(err.contains(complaint), "{to}: {err}");
    }
    Ok(())
}

/// Renders `chart` with `values`: (the manifests file, the resources as JSON).
fn render(chart: &Path, values: &str, out: &Path) -> Result<(PathBuf, Vec<Value>)> {
    let script = root().join("tests/fixtures/render_chart.py");
    let result = Command::new("python3")
        .arg(&script)
        .arg(chart)
        .arg(values)
        .arg(out)
        .output()
        .context("starting python3")?;
    ensure!(
        result.status.success(),
        "rendering {} with {values}: {}",
        chart.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    let json = std::fs::read_to_string(out.join("manifests.json"))?;
    Ok((out.join("manifests.yaml"), serde_json::from_str(&json)?))
}

fn resource<'a>(resources: &'a [Value], kind: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| r["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn env_var<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn helm_chart_renders_valid_manifests_with_default_values() -> Result<()> {
    let dir = TempDir::new("deploy-helm")?;
    let (file, resources) = render(&root().join("deploy/helm/tracer"), "{}", dir.path())?;
    for version in KUBERNETES_VERSIONS {
        let out = validate(std::slice::from_ref(&file), version).map_err(anyhow::Error::msg)?;
        assert_eq!(passed(&out).len(), 5, "{out}");
    }
    let pod = &resource(&resources, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        security["capabilities"]["add"],
        serde_json::json!([
            "BPF",
            "PERFMON",
            "NET_ADMIN",
            "SYS_PTRACE",
            "DAC_READ_SEARCH"
        ])
    );
    assert_eq!(
        env_var(container, "K8S_NODE_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert!(env_var(container, "OTEL_EXPORTER_OTLP_ENDPOINT").is_none());
    assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
    let config = resource(&resources, "ConfigMap")["data"]["tracer.yaml"]
        .as_str()
        .unwrap();
    assert!(
        config.contains("pod_annotation: tracer.io/enabled=true"),
        "{config}"
    );
    let rules = &resource(&resources, "ClusterRole")["rules"];
    assert_eq!(
        rules,
        &serde_json::json!([{"apiGroups": [""], "resources": ["pods"],
                             "verbs": ["get", "list", "watch"]}])
    );
    Ok(())
}

#[test]
fn helm_chart_values_reach_the_manifests() -> Result<()> {
    let dir = TempDir::new("deploy-helm-values")?;
    let values = r#"{
        "image": {"repository": "registry.example/tracer", "tag": "9.9.9"},
        "otlp": {"endpoint": "http://collector.observability:4317", "protocol": "grpc"},
        "selectors": [{"namespace": "shop"}, {"pod_label": "app=web", "service_name": "web"}],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        "privileged": true,
        "captureBytes": 2048
    }"#;
    let (file, resources) = render(&root().join("deploy/helm/tracer"), values, dir.path())?;
    validate(std::slice::from_ref(&file), "1.37.0").map_err(anyhow::Error::msg)?;
    let container = &resource(&resources, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/tracer:9.9.9");
    assert_eq!(
        env_var(container, "OTEL_EXPORTER_OTLP_ENDPOINT").unwrap()["value"],
        "http://collector.observability:4317"
    );
    assert_eq!(
        env_var(container, "OTEL_EXPORTER_OTLP_PROTOCOL").unwrap()["value"],
        "grpc"
    );
    assert_eq!(container["securityContext"]["privileged"], true);
    assert!(container["securityContext"]["capabilities"].is_null());
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    let config = resource(&resources, "ConfigMap")["data"]["tracer.yaml"]
        .as_str()
        .unwrap();
    for line in [
        "capture_bytes: 2048",
        "- namespace: shop",
        "pod_label: app=web",
    ] {
        assert!(config.contains(line), "{line:?} not in {config}");
    }
    Ok(())
}

#[test]
fn a_broken_chart_fails_validation() -> Result<()> {
    let dir = TempDir::new("deploy-helm-broken")?;
    let chart = dir.path().join("tracer");
    copy_dir(&root().join("deploy/helm/tracer"), &chart)?;
    let template = chart.join("templates/daemonset.yaml");
    let text = std::fs::read_to_string(&template)?;
    ensure!(text.contains("hostPID: true"));
    std::fs::write(&template, text.replace("hostPID: true", "hostPID: \"yes\""))?;
    let out = dir.path().join("out");
    std::fs::create_dir(&out)?;
    let (file, _) = render(&chart, "{}", &out)?;
    let err = validate(&[file], "1.37.0").expect_err("hostPID as a string");
    assert!(err.contains("hostPID"), "{err}");

    // A template error fails the render itself.
    std::fs::write(&template, text.replace("{{- end }}", ""))?;
    assert!(render(&chart, "{}", &out).is_err());
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// `systemd-analyze verify` of the unit, with ExecStart pointing at `binary` (verify checks
/// that it exists). Its warnings (unknown keys, bad values) go to stderr: any is a failure.
fn verify_unit(unit: &str, binary: &Path, dir: &Path) -> Result<String, String> {
    let path = dir.join("tracer.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tracer", &binary.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .map_err(|e| format!("systemd-analyze did not start: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && stderr.trim().is_empty() {
        Ok(stderr)
    } else {
        Err(stderr)
    }
}

#[test]
fn systemd_unit_verifies() -> Result<()> {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/tracer.service"))?;
    for needed in [
        "ExecStart=/usr/local/bin/tracer run --config /etc/tracer/tracer.yaml",
        "RuntimeDirectory=tracer",
        "TRACER_SOCKET=/run/tracer/tracer.sock",
    ] {
        assert!(unit.contains(needed), "{needed:?} missing from the unit");
    }
    let dir = TempDir::new("deploy-systemd")?;
    let binary = agent_binary()?;
    verify_unit(&unit, &binary, dir.path()).map_err(anyhow::Error::msg)?;
    let broken = unit.replace("ProtectSystem=strict", "ProtectSystem=everything");
    let err = verify_unit(&broken, &binary, dir.path()).expect_err("a bad ProtectSystem=");
    assert!(
        err.contains("ProtectSystem") || err.contains("protect system"),
        "{err}"
    );
    Ok(())
}
