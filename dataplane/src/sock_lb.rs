//! The socket-level balancer (the `shoal_connect4`, `shoal_sendmsg4`, `shoal_recvmsg4` and
//! `shoal_getpeername4` programs, Cilium's socket LB): attached to the cgroup v2 root, so it
//! sees every IPv4 `connect(2)`, UDP `sendmsg(2)`/`recvmsg(2)` and `getpeername(2)` on the
//! host, and told which sockets are this node's: its network namespace (by cookie: node-local
//! clients of published ports) and its task cgroup subtree (by cgroup ID: tasks' clients of
//! VIPs). The attachment belongs to the [`Dataplane`]'s program and goes with it (also when
//! the agent is killed: the link is an fd, not pinned).
//!
//! [`Dataplane`]: crate::Dataplane

use std::{
    fs::{self, File},
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use shoal_common::{
    lb::{FLOWS_MAP, FlowKey, FlowState},
    programs,
    sock_lb::{CONFIG_MAP, SOCK_CONFIG_NETNS, SOCK_CONFIG_TASK_CGROUP},
};

use crate::{error::Error, programs::program_mut};

/// The socket-level balancer's programs, attached in this order (the peer-name and receive hooks first, so a socket
/// is never balanced without its origin being shown).
pub const PROGRAMS: [&str; 4] = [
    programs::GETPEERNAME4,
    programs::RECVMSG4,
    programs::CONNECT4,
    programs::SENDMSG4,
];
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

/// Attaches the programs to `cgroup` for the network namespace of the calling thread.
pub fn attach(ebpf: &mut Ebpf, cgroup: &Path) -> Result<(), Error> {
    let cookie = netns_cookie().map_err(|source| Error::Io {
        what: "reading the network namespace cookie (SO_NETNS_COOKIE, Linux 5.14)",
        path: PathBuf::from("/proc/self/ns/net"),
        source,
    })?;
    set_config(ebpf, SOCK_CONFIG_NETNS, cookie)?;
    attach_programs(ebpf, cgroup, &PROGRAMS)
}

/// Loads and attaches the do-nothing `connect4` floor to `cgroup` (benchmarks: what the hook
/// itself costs; the agent never loads it).
pub fn attach_floor(ebpf: &mut Ebpf, cgroup: &Path) -> Result<(), Error> {
    let name = programs::CONNECT4_FLOOR;
    program_mut::<CgroupSockAddr>(ebpf, name)?
        .load()
        .map_err(|e| Error::Program {
            name,
            source: Box::new(e),
        })?;
    attach_programs(ebpf, cgroup, &[name])
}

fn attach_programs(ebpf: &mut Ebpf, cgroup: &Path, names: &[&'static str]) -> Result<(), Error> {
    for &name in names {
        let program = program_mut::<CgroupSockAddr>(ebpf, name)?;
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

/// Serves the sockets of processes below `subtree`, the node's task cgroup subtree in the
/// cgroup v2 hierarchy (`.../shoal-tasks/<node-id>`): their connections and datagrams to VIPs
/// are balanced at the socket. Returns the subtree's cgroup ID.
pub fn serve_tasks(ebpf: &mut Ebpf, subtree: &Path) -> Result<u64, Error> {
    // A cgroup v2 directory's inode number is its cgroup ID (kernfs node ID), what
    // `bpf_get_current_ancestor_cgroup_id` returns.
    let id = fs::metadata(subtree)
        .map_err(|source| Error::Io {
            what: "reading the task cgroup subtree's ID",
            path: subtree.to_path_buf(),
            source,
        })?
        .ino();
    set_config(ebpf, SOCK_CONFIG_TASK_CGROUP, id)?;
    Ok(id)
}

fn set_config(ebpf: &mut Ebpf, index: u32, value: u64) -> Result<(), Error> {
    let map = ebpf
        .map_mut(CONFIG_MAP)
        .ok_or(Error::MissingMap { name: CONFIG_MAP })?;
    let map_error = |e: aya::maps::MapError| Error::Map {
        name: CONFIG_MAP,
        source: Box::new(e),
    };
    let mut config: Array<_, u64> = Array::try_from(map).map_err(map_error)?;
    config.set(index, value, 0).map_err(map_error)
}

/// The VIP flow table (`SHOAL_LB_FLOWS`) a node pinned under `pin_dir`, read from outside the
/// agent (tests, diagnostics): a socket-balanced connection must have no entry there.
pub fn pinned_vip_flows(pin_dir: &Path) -> Result<Vec<(FlowKey, FlowState)>, Error> {
    let map_error = |e: aya::maps::MapError| Error::Map {
        name: FLOWS_MAP,
        source: Box::new(e),
    };
    let data = MapData::from_pin(pin_dir.join(FLOWS_MAP)).map_err(map_error)?;
    let map: HashMap<_, FlowKey, FlowState> =
        HashMap::try_from(Map::from_map_data(data).map_err(map_error)?).map_err(map_error)?;
    map.iter().collect::<Result<_, _>>().map_err(map_error)
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
