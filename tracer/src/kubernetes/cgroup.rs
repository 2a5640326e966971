//! Which container a process runs in, read from its cgroup path (/proc/PID/cgroup).
//!
//! Container runtimes name the cgroup of each container after the container's id, and the
//! kubelet names the pod's parent cgroup after the pod's uid:
//!
//! | runtime, cgroup driver | leaf of the cgroup path |
//! |---|---|
//! | containerd, systemd | `kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope` |
//! | CRI-O, systemd | `kubepods-pod<uid>.slice/crio-<id>.scope` (and `crio-conmon-<id>.scope`) |
//! | cri-dockerd / docker, systemd | `.../docker-<id>.scope` |
//! | any runtime, cgroupfs driver | `/kubepods/burstable/pod<uid>/<id>` |
//! | docker alone | `/docker/<id>`, or `/system.slice/docker-<id>.scope` |
//!
//! The id is 64 hex digits everywhere. cgroup v1 hosts list one line per hierarchy
//! (`12:pids:/kubepods/...`), v2 one line (`0::/kubepods.slice/...`); a reader in another cgroup
//! namespace sees paths relative to its own (`0::/../../kubepods-...`). Only the components
//! are read, so all of these work.

/// The container a process runs in, as its cgroup path names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Container {
    /// The runtime's container id (64 hex digits), as `container.id` and Kubernetes'
    /// `containerID` (without its `containerd://` prefix) spell it.
    pub id: String,
    /// The Kubernetes pod's uid, with dashes, when the path holds one.
    pub pod_uid: Option<String>,
}

/// Reads `/proc/PID/cgroup`; None for processes outside containers (or gone).
pub fn container_of(pid: u32) -> Option<Container> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// The container named by the contents of a `/proc/PID/cgroup` file. The v2 line is
/// preferred; on v1-only hosts every hierarchy names the same container.
pub fn parse(proc_cgroup: &str) -> Option<Container> {
    // "hierarchy-id:controllers:path"; the path may itself contain ':'.
    let lines: Vec<(&str, &str)> = proc_cgroup
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let id = fields.next()?;
            Some((id, fields.nth(1)?))
        })
        .collect();
    let v2 = lines.iter().filter(|(id, _)| *id == "0");
    let v1 = lines.iter().filter(|(id, _)| *id != "0");
    v2.chain(v1).find_map(|(_, path)| parse_path(path))
}

/// The container in one cgroup path: its last component that names a container id.
pub fn parse_path(path: &str) -> Option<Container> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (at, id) = components
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| container_id(c).map(|id| (i, id)))?;
    let pod_uid = components[..at].iter().rev().find_map(|c| pod_uid(c));
    Some(Container {
        id: id.to_string(),
        pod_uid,
    })
}

/// The container id in one path component: `<id>`, `<prefix>-<id>.scope` for the systemd
/// driver's runtimes (`cri-containerd`, `crio`, `docker`, `libpod`), and not the
/// `crio-conmon-<id>.scope` of CRI-O's monitor process, which is not the container.
fn container_id(component: &str) -> Option<&str> {
    let id = match component.strip_suffix(".scope") {
        Some(unit) => {
            if unit.starts_with("crio-conmon-") {
                return None;
            }
            let (_, id) = unit.rsplit_once('-')?;
            id
        }
        None => component,
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The pod uid in one path component: `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<qos>]-pod<uid with '_' for '-'>.slice` (systemd driver, which reserves '-').
fn pod_uid(component: &str) -> Option<String> {
    let unit = component.strip_suffix(".slice").unwrap_or(component);
    let start = unit.rfind("pod")? + 3;
    let uid = unit[start..].replace('_', "-");
    let shape_ok = uid.len() == 36
        && uid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    // "pod" must begin the component or follow the slice's '-' ("kubepods-pod...").
    let boundary = start == 3 || unit.as_bytes()[start - 4] == b'-';
    (shape_ok && boundary).then_some(uid)
}

#[cfg(test)]
mod tests;
