//! Finding a program of the loaded object by name, as its type, and naming it in errors: what
//! the loader, the socket-level balancer and the flow clock share (as `maps.rs` for maps).

use aya::{
    Ebpf,
    programs::{Program, ProgramError},
};

use crate::error::Error;

/// Program `name` of `ebpf`, as a `T` (`Xdp`, `SchedClassifier`, `CgroupSockAddr`).
pub(crate) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram { name })?
        .try_into()
        .map_err(|e| program_error(name, e))
}

/// Program `name` of `ebpf`, as a `T`, to run (`BPF_PROG_TEST_RUN`) rather than change.
pub(crate) fn program<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a T, Error>
where
    &'a T: TryFrom<&'a Program, Error = ProgramError>,
{
    ebpf.program(name)
        .ok_or(Error::MissingProgram { name })?
        .try_into()
        .map_err(|e| program_error(name, e))
}

/// `e`, about program `name`.
pub(crate) fn program_error(name: &'static str, e: ProgramError) -> Error {
    Error::Program {
        name,
        source: Box::new(e),
    }
}
