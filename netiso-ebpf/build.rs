//! Rebuild the eBPF object when bpf-linker changes: it is the linker of this crate but
//! cargo does not track it.
fn main() {
    if let Ok(bpf_linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
