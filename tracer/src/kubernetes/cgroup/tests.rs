//! /proc/PID/cgroup contents as real hosts write them.

use super::*;

const ID: &str = "a3f1c9e2b7d64f0e8c5a1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5";
const UID: &str = "7c8f6d2e-1b2a-4c3d-9e8f-0a1b2c3d4e5f";
const UID_ESCAPED: &str = "7c8f6d2e_1b2a_4c3d_9e8f_0a1b2c3d4e5f";

fn in_pod() -> Option<Container> {
    Some(Container {
        id: ID.into(),
        pod_uid: Some(UID.into()),
    })
}

#[test]
fn containerd_with_the_systemd_driver_on_cgroup_v2() {
    let file = format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_ESCAPED}.slice/\
         cri-containerd-{ID}.scope\n"
    );
    assert_eq!(parse(&file), in_pod());
}

#[test]
fn cri_o_and_its_monitor() {
    let pod = format!(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_ESCAPED}.slice"
    );
    assert_eq!(parse(&format!("{pod}/crio-{ID}.scope\n")), in_pod());
    // A container that runs systemd gets a nested cgroup below its scope.
    assert_eq!(
        parse(&format!("{pod}/crio-{ID}.scope/container\n")),
        in_pod()
    );
    // conmon watches the container from outside it: not the container's process.
    assert_eq!(parse(&format!("{pod}/crio-conmon-{ID}.scope\n")), None);
}

#[test]
fn docker_through_cri_dockerd_in_a_guaranteed_pod() {
    // Guaranteed pods have no QoS slice.
    let file = format!("0::/kubepods.slice/kubepods-pod{UID_ESCAPED}.slice/docker-{ID}.scope\n");
    assert_eq!(parse(&file), in_pod());
}

#[test]
fn cgroupfs_driver_on_cgroup_v1() {
    let file = format!(
        "12:pids:/kubepods/burstable/pod{UID}/{ID}\n\
         11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
         5:memory:/kubepods/burstable/pod{UID}/{ID}\n\
         1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n\
         0::/\n"
    );
    assert_eq!(parse(&file), in_pod());
}

#[test]
fn cgroupfs_driver_on_cgroup_v2() {
    assert_eq!(
        parse(&format!("0::/kubepods/besteffort/pod{UID}/{ID}\n")),
        in_pod()
    );
}

#[test]
fn kind_nodes_nest_the_kubelet_slice() {
    let file = format!(
        "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
         kubelet-kubepods-besteffort-pod{UID_ESCAPED}.slice/cri-containerd-{ID}.scope\n"
    );
    assert_eq!(parse(&file), in_pod());
}

#[test]
fn seen_from_another_cgroup_namespace() {
    // The agent's container has its own cgroup namespace unless privileged.
    let file =
        format!("0::/../../kubepods-besteffort-pod{UID_ESCAPED}.slice/cri-containerd-{ID}.scope\n");
    assert_eq!(parse(&file), in_pod());
}

#[test]
fn plain_docker_has_a_container_but_no_pod() {
    let bare = Some(Container {
        id: ID.into(),
        pod_uid: None,
    });
    assert_eq!(
        parse(&format!("0::/system.slice/docker-{ID}.scope\n")),
        bare
    );
    assert_eq!(
        parse(&format!(
            "13:memory:/docker/{ID}\n12:pids:/docker/{ID}\n0::/\n"
        )),
        bare
    );
    assert_eq!(parse(&format!("0::/docker/{ID}\n")), bare);
}

#[test]
fn host_processes_are_in_no_container() {
    for file in [
        "0::/user.slice/user-1000.slice/session-2.scope\n",
        "0::/system.slice/nginx.service\n",
        "0::/init.scope\n",
        "0::/\n",
        // The QoS and pod slices themselves (the pod's processes are one level down).
        "0::/kubepods.slice/kubepods-burstable.slice\n",
        "12:pids:/\n11:memory:/user.slice\n0::/\n",
        "",
    ] {
        assert_eq!(parse(file), None, "{file:?}");
    }
}

#[test]
fn near_misses_are_not_ids() {
    let short = &ID[..63];
    assert_eq!(parse(&format!("0::/docker/{short}\n")), None);
    let not_hex = ID.replace('a', "g");
    assert_eq!(parse(&format!("0::/docker/{not_hex}\n")), None);
    // A pod component with a malformed uid gives the container without a pod.
    let file = format!("0::/kubepods/pod1234/{ID}\n");
    assert_eq!(parse(&file).unwrap().pod_uid, None);
}

#[test]
fn this_test_process_reads_its_own_cgroup() {
    // Whatever this machine runs in, reading and parsing the real file must not fail.
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert_eq!(container_of(std::process::id()), parse(&text));
}
