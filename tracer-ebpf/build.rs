use which::which;

/// Rebuild the BPF object when bpf-linker changes (e.g. reinstalled against a new LLVM).
fn main() {
    // aya-build passes `--cfg bpf_target_arch="<the agent's target arch>"`: the programs read
    // that architecture's saved syscall registers (`data::exit_args`).
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"loongarch64\", \"mips\", \"powerpc64\", \"riscv64\", \"s390x\"))"
    );
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
