//! The agent's config file (`tracer run --config FILE`), TOML or YAML: the selectors and
//! settings `tracer run` takes as flags. Flags override the file; the file overrides the
//! `OTEL_*` variables; those override the defaults.
//!
//! ```toml
//! control_socket = "/run/tracer/tracer.sock"
//! capture_bytes = 4096
//! ring_buffer_mib = 4
//! inject_traceparent = false
//! metrics_addr = "127.0.0.1:9464"
//!
//! [export]
//! otlp_endpoint = "http://collector:4318"
//! otlp_protocol = "http/protobuf"
//! output = "/var/log/tracer/spans.jsonl"
//!
//! [[select]]
//! exe = "nginx"
//! service_name = "web"
//!
//! [[select]]
//! port = 8080
//!
//! [[select]]
//! pod_annotation = "tracer.io/enabled=true"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::control::{KeyValue, Selector};

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub control_socket: Option<PathBuf>,
    pub capture_bytes: Option<u32>,
    pub ring_buffer_mib: Option<u32>,
    pub inject_traceparent: Option<bool>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub export: ExportSection,
    #[serde(default, rename = "select")]
    pub selectors: Vec<SelectorEntry>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<String>,
    pub output: Option<PathBuf>,
}

/// One selector: exactly one of pid, exe, port, cgroup, namespace, pod_label, pod_annotation;
/// optionally the service name.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectorEntry {
    pub pid: Option<u32>,
    pub exe: Option<String>,
    pub port: Option<u16>,
    pub cgroup: Option<String>,
    pub namespace: Option<String>,
    /// `key=value`
    pub pod_label: Option<KeyValue>,
    /// `key=value`
    pub pod_annotation: Option<KeyValue>,
    pub service_name: Option<String>,
}

impl Config {
    /// Reads `path`; `.yaml`/`.yml` files are YAML, everything else TOML. Errors name the
    /// file, the line, and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let config: Config = if yaml {
            serde_norway::from_str(&text)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?
        } else {
            toml::from_str(&text).map_err(|e| {
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                match line {
                    Some(line) => anyhow::anyhow!(
                        "config {}, line {line}: {}",
                        path.display(),
                        e.message().trim()
                    ),
                    None => anyhow::anyhow!("config {}: {}", path.display(), e.message().trim()),
                }
            })?
        };
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<()> {
        for (i, entry) in self.selectors.iter().enumerate() {
            entry
                .selector()
                .with_context(|| format!("config {}, select entry {}", path.display(), i + 1))?;
        }
        Ok(())
    }

    pub fn selectors(&self) -> Vec<(Selector, Option<String>)> {
        self.selectors
            .iter()
            .filter_map(|e| Some((e.selector().ok()?, e.service_name.clone())))
            .collect()
    }
}

impl SelectorEntry {
    pub fn selector(&self) -> Result<Selector> {
        let given = [
            self.pid.map(Selector::Pid),
            self.exe.clone().map(Selector::Exe),
            self.port.map(Selector::Port),
            self.cgroup.clone().map(Selector::Cgroup),
            self.namespace.clone().map(Selector::Namespace),
            self.pod_label.clone().map(Selector::PodLabel),
            self.pod_annotation.clone().map(Selector::PodAnnotation),
        ];
        let mut given = given.into_iter().flatten();
        match (given.next(), given.next()) {
            (Some(selector), None) => Ok(selector),
            _ => bail!(
                "give exactly one of pid, exe, port, cgroup, namespace, pod_label, pod_annotation"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, text: &str) -> Result<Config> {
        let dir = std::env::temp_dir().join(format!("tracer-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn toml_and_yaml_say_the_same() {
        let toml = load(
            "a.toml",
            "capture_bytes = 2048\n[export]\notlp_endpoint = \"http://c:4318\"\n\
             [[select]]\nexe = \"nginx\"\nservice_name = \"web\"\n[[select]]\nport = 8080\n",
        )
        .unwrap();
        let yaml = load(
            "a.yaml",
            "capture_bytes: 2048\nexport:\n  otlp_endpoint: http://c:4318\n\
             select:\n  - exe: nginx\n    service_name: web\n  - port: 8080\n",
        )
        .unwrap();
        assert_eq!(toml, yaml);
        assert_eq!(
            toml.selectors(),
            vec![
                (Selector::Exe("nginx".into()), Some("web".into())),
                (Selector::Port(8080), None)
            ]
        );
    }

    #[test]
    fn pod_selectors_in_toml_and_yaml() {
        let toml = load(
            "pods.toml",
            "[[select]]\nnamespace = \"shop\"\n[[select]]\npod_label = \"app=web\"\n\
             service_name = \"web\"\n[[select]]\npod_annotation = \"tracer.io/enabled=true\"\n",
        )
        .unwrap();
        let yaml = load(
            "pods.yaml",
            "select:\n  - namespace: shop\n  - pod_label: app=web\n    service_name: web\n\
             \x20 - pod_annotation: tracer.io/enabled=true\n",
        )
        .unwrap();
        assert_eq!(toml, yaml);
        assert_eq!(
            toml.selectors(),
            vec![
                (Selector::Namespace("shop".into()), None),
                (
                    Selector::PodLabel("app=web".parse().unwrap()),
                    Some("web".into())
                ),
                (
                    Selector::PodAnnotation("tracer.io/enabled=true".parse().unwrap()),
                    None
                ),
            ]
        );
        let e = load("bad.toml", "[[select]]\npod_label = \"app\"\n").unwrap_err();
        assert!(e.to_string().contains("expected key=value"), "{e}");
    }

    /// The configs shipped in deploy/ are read by this very loader.
    #[test]
    fn the_shipped_configs_load() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let host = Config::load(&deploy.join("systemd/tracer.yaml")).unwrap();
        assert!(host.selectors().is_empty());
        let configmap =
            std::fs::read_to_string(deploy.join("kubernetes/20-configmap.yaml")).unwrap();
        let configmap: serde_norway::Value = serde_norway::from_str(&configmap).unwrap();
        let text = configmap["data"]["tracer.yaml"].as_str().unwrap();
        let cluster = load("configmap.yaml", text).unwrap();
        assert_eq!(
            cluster.selectors(),
            vec![(
                Selector::PodAnnotation("tracer.io/enabled=true".parse().unwrap()),
                None
            )]
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let e = load(
            "b.toml",
            "capture_bytes = 2048\n[export]\notlp_endpiont = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("b.toml, line 3") && e.contains("otlp_endpiont"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        let e = load("c.yaml", "export:\n  otlp_endpiont: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.yaml") && e.contains("line 2") && e.contains("otlp_endpiont"),
            "{e}"
        );
        let e = load("d.toml", "[[select]]\npid = 1\nexe = \"x\"\n").unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "config {}, select entry 1: give exactly one of pid, exe, port, cgroup, namespace, \
                 pod_label, pod_annotation",
                std::env::temp_dir()
                    .join(format!("tracer-config-{}", std::process::id()))
                    .join("d.toml")
                    .display()
            )
        );
        let e = load("e.toml", "capture_bytes = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("invalid type"), "{e}");
    }
}
