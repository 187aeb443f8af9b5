//! The socket-level balancer for node-local clients of published ports (the `shoal_connect4`
//! and `shoal_getpeername4` programs, Cilium's socket LB): attached to the cgroup v2 root, so it sees every IPv4
//! `connect(2)` on the host, and told which network namespace is the node's (its cookie), so
//! it acts there only. The attachment belongs to the [`Dataplane`]'s program and goes with it
//! (also when the agent is killed: the link is an fd, not pinned).
//!
//! [`Dataplane`]: crate::Dataplane

use std::{
    fs::{self, File},
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::Array,
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use shoal_common::programs;

use crate::error::Error;

/// The map holding the node's network namespace cookie (index 0).
const NETNS_MAP: &str = "SHOAL_SOCK_NETNS";
/// `SO_NETNS_COOKIE` (Linux 5.14): the cookie of a socket's network namespace.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on a v2 host,
/// `/sys/fs/cgroup/unified` on a hybrid one; `None` without one.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    // mountinfo: `id parent maj:min root point options - fstype ...`; the hierarchy's own root
    // (root "/"), not a bind mount of a subtree.
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let whole = right.split(' ').next()? == "cgroup2" && fields.get(3) == Some(&"/");
        whole.then(|| PathBuf::from(fields.get(4).copied().unwrap_or_default()))
    })
}

/// Attaches the program to `cgroup` for the network namespace of the calling thread.
pub fn attach(ebpf: &mut Ebpf, cgroup: &Path) -> Result<(), Error> {
    let cookie = netns_cookie().map_err(|source| Error::Io {
        what: "reading the network namespace cookie (SO_NETNS_COOKIE, Linux 5.14)",
        path: PathBuf::from("/proc/self/ns/net"),
        source,
    })?;
    let map = ebpf
        .map_mut(NETNS_MAP)
        .ok_or(Error::MissingMap { name: NETNS_MAP })?;
    let map_error = |e: aya::maps::MapError| Error::Map {
        name: NETNS_MAP,
        source: Box::new(e),
    };
    let mut netns: Array<_, u64> = Array::try_from(map).map_err(map_error)?;
    netns.set(0, cookie, 0).map_err(map_error)?;
    for name in [programs::CONNECT4, programs::GETPEERNAME4] {
        let program: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(Error::MissingProgram { name })?
            .try_into()
            .map_err(|e| Error::Program {
                name,
                source: Box::new(e),
            })?;
        let dir = File::open(cgroup).map_err(|source| Error::Io {
            what: "opening the cgroup v2 root",
            path: cgroup.to_path_buf(),
            source,
        })?;
        // As a bpf_link, which the kernel always attaches as one of many (several agents on
        // one host each attach their own); it refuses the multi flag there, so none is passed.
        program
            .attach(dir, CgroupAttachMode::Single)
            .map_err(|e| Error::Attach {
                program: name,
                interface: cgroup.display().to_string(),
                source: Box::new(e),
            })?;
    }
    Ok(())
}

/// The cookie of the calling thread's network namespace, from a throwaway socket.
fn netns_cookie() -> io::Result<u64> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}
