//! Installs what is missing; quick when everything is there already.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// bpf-linker version known to build here against the nightly toolchain's own LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the tests and the demo drive as real peers: (binary, package).
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("nginx", "nginx"),
    ("nghttpd", "nghttp2-server"),
];
/// Python modules the tests use: (import name, PyPI package). The gRPC tests drive grpcio;
/// the deploy tests validate the Kubernetes manifests offline against the API schemas that
/// kubernetes-validate bundles, and render the Helm chart with Helm's own Go engine (the
/// helm-python-sdk wheel bundles it: no helm binary can be downloaded here).
const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("grpc", "grpcio"),
    ("kubernetes_validate", "kubernetes-validate==1.37.0"),
    ("helm_python", "helm-python-sdk==0.2.2"),
];

/// Everything: building, and running the tests and the demo on this host.
pub fn run() -> Result<()> {
    build_tools()?;
    tracefs()?;
    debian_tools()?;
    python_modules()?;
    Ok(())
}

/// What building the agent needs, and nothing more: the container image build runs this
/// (it can neither mount tracefs nor needs test peers).
pub fn build_tools() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()
}

/// The kernel programs build with nightly's `-Z build-std=core`, which needs rust-src.
fn nightly_rust_src() -> Result<()> {
    let installed = cmd::output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    );
    match installed {
        Some(list) if list.lines().any(|l| l.starts_with("rust-src")) => Ok(()),
        Some(_) => {
            eprintln!("xtask: installing rust-src for the nightly toolchain");
            cmd::run(
                "rustup",
                &["component", "add", "rust-src", "--toolchain", "nightly"],
            )
        }
        None => {
            eprintln!("xtask: installing the nightly toolchain with rust-src");
            cmd::run(
                "rustup",
                &[
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ],
            )
        }
    }
}

/// bpf-linker, built against the libLLVM shipped with the nightly toolchain (no system LLVM
/// needed). Reinstalled when it no longer starts (e.g. nightly was updated under it).
fn bpf_linker() -> Result<()> {
    if cmd::output("bpf-linker", &["--version"]).is_some() {
        return Ok(());
    }
    let sysroot = cmd::output("rustc", &["+nightly", "--print", "sysroot"])
        .context("finding the nightly toolchain")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|name| {
            let stem = name.strip_prefix("lib")?.strip_suffix(".so")?;
            stem.starts_with("LLVM-").then(|| stem.to_string())
        })
        .with_context(|| format!("no libLLVM-*.so in {}", lib.display()))?;
    // "LLVM-22-rust-1.97.0-nightly" -> 22
    let major = llvm
        .split('-')
        .nth(1)
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read the LLVM version from {llvm}"))?;
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} against {llvm} (about a minute)");
    let rustflags = format!(
        "-L native={lib} -l dylib={llvm} -C link-arg=-Wl,-rpath,{lib}",
        lib = lib.display()
    );
    let features = format!("llvm-{major},no-llvm-linking");
    cmd::run_with(
        std::process::Command::new("cargo")
            .env("RUSTFLAGS", rustflags)
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--locked", "--no-default-features", "--features", &features]),
    )
}

/// Syscall tracepoints need tracefs mounted.
fn tracefs() -> Result<()> {
    let root = Path::new("/sys/kernel/tracing");
    if root.join("events").is_dir() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "tracefs is not mounted and mounting it needs root: run `sudo mount -t tracefs tracefs /sys/kernel/tracing`"
        );
    }
    eprintln!("xtask: mounting tracefs on /sys/kernel/tracing");
    cmd::run(
        "mount",
        &["-t", "tracefs", "tracefs", "/sys/kernel/tracing"],
    )
}

/// What `cargo xtask bench` adds: wrk, the saturating load generator.
pub fn bench_tools() -> Result<()> {
    install_debian(&[("wrk", "wrk")])
}

fn debian_tools() -> Result<()> {
    install_debian(DEBIAN_PACKAGES)
}

fn install_debian(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(binary, _)| cmd::output("sh", &["-c", &format!("command -v {binary}")]).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "missing tools {missing:?}: run `sudo apt-get install -y {}`",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    if cmd::run("apt-get", &args).is_err() {
        cmd::run("apt-get", &["update"])?;
        cmd::run("apt-get", &args)?;
    }
    Ok(())
}

fn python_modules() -> Result<()> {
    let missing: Vec<&str> = PYTHON_PACKAGES
        .iter()
        .filter(|(module, _)| {
            cmd::output("python3", &["-c", &format!("import {module}")]).is_none()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Python packages {}", missing.join(" "));
    let mut args = vec!["-m", "pip", "install", "--quiet"];
    args.extend(&missing);
    cmd::run("python3", &args)
}
