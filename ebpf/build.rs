//! Links the programs with BPF's 32-bit ALU (`alu32`, kernel >= 5.1): the round-robin cursor
//! needs a 32-bit atomic fetch-add, which LLVM emits only with it ("Invalid usage of the XADD
//! return value" otherwise). aya-build sets the rustflags itself, so the feature is passed to
//! bpf-linker from here (rustc already passes `--cpu`, which may be given only once).
fn main() {
    println!("cargo:rustc-link-arg=--cpu-features=+alu32");
}
