//! What the host must give the agent before it touches anything: root, network namespaces,
//! eBPF (XDP and tc programs), and, in a container (deploy/docker-stack.yml,
//! deploy/kubernetes/), the capabilities, the host's bpffs and IPv4 forwarding. Each missing
//! piece is one line naming the fix, so that an operator (or `journalctl -u shoal`, or
//! `docker service logs`) sees what to change rather than a syscall's errno.

use std::path::Path;

use anyhow::bail;
use aya::{
    programs::{ProgramError, ProgramType},
    sys::is_program_supported,
};
use nix::{
    sys::{
        statfs::{BPF_FS_MAGIC, statfs},
        statvfs::{FsFlags, statvfs},
    },
    unistd::{AccessFlags, access},
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

/// Capabilities the agent cannot work without, with what each is for. deploy/docker-stack.yml
/// and deploy/kubernetes/shoal-daemonset.yaml grant exactly these (tests/e2e/agent_container.rs
/// runs the agent with them, and with each one removed). CAP_BPF and CAP_PERFMON are not among
/// them: the kernel grants what they cover to CAP_SYS_ADMIN (`bpf_capable()`,
/// `perfmon_capable()`). The numbers are the kernel's (`include/uapi/linux/capability.h`).
const NEEDED_CAPABILITIES: &[(u32, &str, &str)] = &[
    (12, "CAP_NET_ADMIN", "netlink, XDP, tc, nftables"),
    (21, "CAP_SYS_ADMIN", "mounts, namespaces, eBPF"),
    (10, "CAP_NET_BIND_SERVICE", "DNS on port 53 in every task"),
    (7, "CAP_SETUID", "tasks' --user"),
    (6, "CAP_SETGID", "tasks' --user and groups"),
    (0, "CAP_CHOWN", "secrets' and configs' uid and gid"),
    (3, "CAP_FOWNER", "their mode, once chowned"),
    (5, "CAP_KILL", "stopping tasks of other users"),
];

/// Where the host's bpffs must be: the pins outlive the agent only there.
const BPFFS: &str = "/sys/fs/bpf";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// What a container must give the agent that root on the host always has: the capabilities
/// (euid 0 in a container means little without them), the host's bpffs (where /sys is
/// read-only the agent cannot mount one itself, and one of its own would vanish with the
/// container, pins and all), and IPv4 forwarding (where /proc/sys is read-only the agent
/// cannot turn it on itself).
pub fn require_container_needs() -> anyhow::Result<()> {
    let effective = effective_capabilities()?;
    let missing: Vec<String> = NEEDED_CAPABILITIES
        .iter()
        .filter(|(bit, _, _)| effective & (1u64 << bit) == 0)
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "shoal agent lacks the capabilities {}: add them (Docker: cap_add; Kubernetes: \
             securityContext.capabilities.add; see deploy/docker-stack.yml), or run it as root \
             on the host",
            missing.join(", ")
        );
    }
    let bpffs = statfs(BPFFS).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC);
    if !bpffs && read_only("/sys") {
        bail!(
            "no bpffs at {BPFFS} and /sys is read-only here (a container): mount the host's \
             {BPFFS} into it (a bind mount, as deploy/docker-stack.yml does)"
        );
    }
    let forwarding = std::fs::read_to_string(IP_FORWARD).map(|v| v.trim() == "1");
    if matches!(forwarding, Ok(false))
        && access(IP_FORWARD, AccessFlags::W_OK) == Err(nix::errno::Errno::EROFS)
    {
        bail!(
            "net.ipv4.ip_forward is 0 and /proc/sys is read-only here (a container): turn it on \
             on the host (sysctl -w net.ipv4.ip_forward=1), as Docker and Kubernetes nodes have it"
        );
    }
    Ok(())
}

/// The effective capability set (`CapEff` in /proc/self/status) as a bit mask.
fn effective_capabilities() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| anyhow::Error::new(e).context("reading /proc/self/status"))?;
    parse_cap_eff(&status).ok_or_else(|| anyhow::anyhow!("no CapEff line in /proc/self/status"))
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn read_only(path: &str) -> bool {
    statvfs(path).is_ok_and(|fs| fs.flags().contains(FsFlags::ST_RDONLY))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_read_from_the_status_file() {
        let status = "Name:\tshoal\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000201000\n";
        let caps = parse_cap_eff(status).unwrap();
        // Bits 12 and 21: CAP_NET_ADMIN and CAP_SYS_ADMIN.
        assert_eq!(caps, (1 << 12) | (1 << 21));
        assert_eq!(parse_cap_eff("Name:\tshoal\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }
}
