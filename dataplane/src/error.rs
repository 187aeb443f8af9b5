//! Errors of the dataplane crate. Each variant says what was being done, to what.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "this shoal binary was built without its eBPF programs (the BPF toolchain was missing); \
         run scripts/setup.sh and rebuild"
    )]
    NoEbpfObject,

    #[error("loading the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),

    #[error("reading the eBPF object's map definitions")]
    ParseObject(#[source] Box<aya_obj::ParseError>),

    #[error("eBPF program {name} is not in the object")]
    MissingProgram { name: &'static str },

    #[error("reading the kernel's clock (jiffies): {program} wrote nothing")]
    NoFlowClock { program: &'static str },

    #[error("eBPF map {name} is not in the object")]
    MissingMap { name: &'static str },

    #[error("eBPF program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },

    #[error("attaching {program} to interface {interface}")]
    Attach {
        program: &'static str,
        interface: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    #[error("{asked} entries for {what}: it takes {min} to {max}")]
    TableSize {
        what: &'static str,
        asked: u32,
        min: u32,
        max: u32,
    },

    #[error("this node's load balancer is full: at most {max} {what}")]
    LbCapacity { what: &'static str, max: u32 },

    #[error("mounting bpffs at {path}")]
    MountBpffs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("entering network namespace {path}")]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<aya::EbpfError> for Error {
    fn from(e: aya::EbpfError) -> Self {
        Error::Load(Box::new(e))
    }
}
