use which::which;

/// Rebuild the BPF object when bpf-linker changes (e.g. reinstalled against a new LLVM).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
