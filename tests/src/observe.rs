//! What the tests observe from outside the agent: the BPF objects in the kernel, the agent's
//! self-metrics (`tracer status --metrics`, `--metrics-addr`), a process's memory.

use std::{collections::HashSet, process::Command};

use anyhow::{Context, Result, ensure};

/// Ids of every BPF program, map and link loaded in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelObjects {
    pub programs: HashSet<u32>,
    pub maps: HashSet<u32>,
    pub links: HashSet<u32>,
}

impl KernelObjects {
    pub fn now() -> Self {
        Self {
            programs: aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .map(|p| p.id())
                .collect(),
            maps: aya::maps::loaded_maps()
                .filter_map(Result::ok)
                .map(|m| m.id())
                .collect(),
            links: aya::programs::loaded_links()
                .filter_map(Result::ok)
                .map(|l| l.id())
                .collect(),
        }
    }

    /// What is loaded now and was not in `before`.
    pub fn since(before: &Self) -> Self {
        let now = Self::now();
        Self {
            programs: now.programs.difference(&before.programs).copied().collect(),
            maps: now.maps.difference(&before.maps).copied().collect(),
            links: now.links.difference(&before.links).copied().collect(),
        }
    }

    /// Those of `self` still loaded.
    pub fn still_loaded(&self) -> Self {
        let now = Self::now();
        Self {
            programs: self.programs.intersection(&now.programs).copied().collect(),
            maps: self.maps.intersection(&now.maps).copied().collect(),
            links: self.links.intersection(&now.links).copied().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.maps.is_empty() && self.links.is_empty()
    }
}

/// One sample's value from OpenMetrics text: `name` (counters with their `_total`) with
/// exactly these labels (`[]`: none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample, label_text) = match series.split_once('{') {
                Some((sample, rest)) => (sample, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let found: Vec<&str> = label_text.split(',').filter(|s| !s.is_empty()).collect();
            (sample == name && found == wanted).then(|| value.parse().ok())?
        })
}

/// The sum of every sample of `name` (counters with their `_total`), whatever its labels.
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// `GET http://addr/metrics` (through curl, as an operator would).
pub fn scrape(addr: &str) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "scraping {addr} failed: {}",
        out.status
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Resident and peak resident memory of `pid`, in KiB (VmRSS, VmHWM).
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{name} of pid {pid}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn reads_samples_by_name_and_labels() {
        let text =
            "# TYPE a counter\na_total{cause=\"x\",sink=\"otlp\"} 4\na_total 2\nb 7\n# EOF\n";
        assert_eq!(
            metric(text, "a_total", &[("cause", "x"), ("sink", "otlp")]),
            Some(4)
        );
        assert_eq!(metric(text, "a_total", &[]), Some(2));
        assert_eq!(metric(text, "b", &[]), Some(7));
        assert_eq!(metric(text, "a_total", &[("cause", "y")]), None);
    }
}
