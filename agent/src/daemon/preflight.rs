//! What the host must give the agent before it touches anything: root, network namespaces,
//! and eBPF (XDP and tc programs). Each missing piece is one line naming the fix, so that an
//! operator (or `journalctl -u shoal`) sees what to change rather than a syscall's errno.

use std::path::Path;

use anyhow::bail;
use aya::{
    programs::{ProgramError, ProgramType},
    sys::is_program_supported,
};

/// The agent (and `--cleanup`) create namespaces, mount bpffs and load eBPF programs.
pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "shoal agent must run as root (it creates network namespaces, mounts and eBPF \
             programs): run it with sudo, or install it as a service with scripts/install.sh"
        );
    }
    Ok(())
}

/// The kernel features the agent needs at start; anything else is checked where it is used.
pub fn require_kernel_features() -> anyhow::Result<()> {
    if !Path::new("/proc/self/ns/net").exists() {
        bail!(
            "this kernel has no network namespaces (/proc/self/ns/net is missing): shoal needs \
             a kernel built with CONFIG_NET_NS=y"
        );
    }
    for (program, what, config) in [
        (ProgramType::Xdp, "XDP programs", "CONFIG_BPF_SYSCALL=y"),
        (
            ProgramType::SchedClassifier,
            "tc eBPF classifiers",
            "CONFIG_NET_CLS_BPF and CONFIG_NET_SCH_INGRESS",
        ),
    ] {
        probe(program, what, config)?;
    }
    Ok(())
}

fn probe(program: ProgramType, what: &str, config: &str) -> anyhow::Result<()> {
    match is_program_supported(program) {
        Ok(true) => Ok(()),
        Ok(false) => bail!("this kernel cannot load {what}: shoal needs a kernel with {config}"),
        Err(ProgramError::SyscallError(e)) => match e.io_error.raw_os_error() {
            Some(libc::ENOSYS) => bail!(
                "this kernel has no eBPF (the bpf system call is missing): shoal needs a kernel \
                 built with CONFIG_BPF_SYSCALL=y"
            ),
            Some(libc::EPERM) => bail!(
                "the kernel refuses to load eBPF programs for this process (EPERM): run the \
                 agent as root on the host, not in a container without CAP_BPF and \
                 CAP_SYS_ADMIN, and with kernel lockdown off"
            ),
            _ => Err(anyhow::Error::new(e).context(format!("probing for {what}"))),
        },
        Err(e) => Err(anyhow::Error::new(e).context(format!("probing for {what}"))),
    }
}
