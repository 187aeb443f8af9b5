//! The eBPF object, built by build.rs from the `shoal-ebpf` crate and embedded in the binary.

use crate::error::Error;

/// The object file's bytes; empty when the crate was built without the BPF toolchain.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shoal-programs"));

/// The embedded object, or an error saying how to get one.
pub fn bytes() -> Result<&'static [u8], Error> {
    if OBJECT.is_empty() {
        return Err(Error::NoEbpfObject);
    }
    Ok(OBJECT)
}
