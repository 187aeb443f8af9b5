//! Destroying the sockets the socket-level balancer sent to a backend that has gone (Cilium
//! does it with a socket iterator and `bpf_sock_destroy`; here userspace does it through the
//! kernel's socket diagnostics, as `ss -K` does).
//!
//! A socket balanced at the socket is connected straight to `backend:port`: no packet of it
//! is ever seen by the tc programs, so when its backend leaves the VIP nothing resets it (the
//! tc path resets such a flow's TCP at its next packet and moves its UDP). The agent calls
//! [`destroy_balanced`] in each of its tasks' network namespaces (and the node's) with the
//! backends that left the load balancer for good:
//!
//! 1. a `NETLINK_SOCK_DIAG` dump (`SOCK_DIAG_BY_FAMILY`, `inet_diag_req_v2`) of the
//!    namespace's IPv4 TCP sockets whose peer may have vanished ([`TCP_STATES`]) and its
//!    connected UDP sockets;
//! 2. a socket is kept when its peer is one of the backends and `SHOAL_SOCK_ORIGINS` has an
//!    entry for `{its cookie (idiag_cookie), peer address, peer port}`: the socket-level
//!    balancer sent it there (a task's own direct connection to the same address has none);
//! 3. `SOCK_DESTROY` for each, naming the socket by the dump's `inet_diag_sockid` (4-tuple,
//!    interface and cookie: the kernel destroys that very socket or none). The kernel aborts
//!    it with `ECONNABORTED` (`tcp_abort`: a connected TCP socket also sends its peer a reset;
//!    `udp_abort`: the UDP socket is disconnected), so the task's next read or write fails
//!    at once instead of hanging, and a new connection is balanced again. Needs
//!    `CONFIG_INET_DIAG_DESTROY` and `CAP_NET_ADMIN`.
//!
//! Hand-built messages (the uapi structs, `linux/inet_diag.h`, are small): no netlink crate
//! for two message types.

use std::{collections::BTreeSet, net::Ipv4Addr, os::fd::AsRawFd as _, path::Path};

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, connect, recv, send,
    socket,
};
use shoal_common::sock_lb::{ORIGINS_MAP, SockOrigin, SockPeer};

use crate::{error::Error, maps::map_error, netns::run_in};

/// How many sockets were destroyed, per protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Destroyed {
    pub tcp: u64,
    pub udp: u64,
}

impl Destroyed {
    pub fn add(&mut self, other: Destroyed) {
        self.tcp += other.tcp;
        self.udp += other.udp;
    }

    pub fn total(&self) -> u64 {
        self.tcp + self.udp
    }
}

/// `linux/sock_diag.h`: the dump request and the destroy request's message types.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_sockid`: sport, dport (be16), src[4], dst[4] (be32), if u32, cookie[2]
/// u32 (host order).
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`: family u8, protocol u8, ext u8, pad u8, states u32, sockid.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg`: family u8, state u8, timer u8, retrans u8, sockid, then expires,
/// rqueue, wqueue, uid, inode (u32 each).
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;
/// Where the sockid starts in an `inet_diag_msg`.
const MSG_SOCKID: usize = 4;

/// TCP states (`include/net/tcp_states.h`) of a socket whose peer may have vanished:
/// `ESTABLISHED`, `SYN_SENT` (a connect to the gone backend still trying) and ours closed
/// first (`FIN_WAIT1`, `FIN_WAIT2`: the backend's answer or FIN never comes). Not once the
/// backend closed (`CLOSE_WAIT`, `LAST_ACK`, `CLOSING`): a task that stopped cleanly ended its
/// connections, and the client must read that end (EOF), not an abort. Nor `LISTEN`,
/// `CLOSE`, `TIME_WAIT` (nothing to abort) or `SYN_RECV` (a server's, never balanced).
const TCP_STATES: u32 = 1 << 1 // ESTABLISHED
    | 1 << 2 // SYN_SENT
    | 1 << 4 // FIN_WAIT1
    | 1 << 5; // FIN_WAIT2
/// A connected UDP socket is `TCP_ESTABLISHED`; an unconnected one (`CLOSE`) has no peer:
/// its next datagram to the VIP is balanced again (the programs' liveness check).
const UDP_STATES: u32 = 1 << 1;

const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;

/// Destroys, inside the network namespace at `netns`, the TCP sockets and connected UDP
/// sockets that the socket-level balancer of `ebpf` sent to one of `backends` (see the
/// module's comment).
pub(crate) fn destroy_balanced(
    ebpf: &Ebpf,
    netns: &Path,
    backends: &BTreeSet<Ipv4Addr>,
) -> Result<Destroyed, Error> {
    let map = ebpf
        .map(ORIGINS_MAP)
        .ok_or(Error::MissingMap { name: ORIGINS_MAP })?;
    let origins: HashMap<&MapData, SockPeer, SockOrigin> =
        HashMap::try_from(map).map_err(map_error(ORIGINS_MAP))?;
    let balanced = |peer: &SockPeer| origins.get(peer, 0).is_ok();
    run_in(netns, || destroy_here(backends, &balanced))?
}

/// [`destroy_balanced`] in the calling thread's network namespace, `balanced` telling the
/// balanced sockets.
fn destroy_here(
    backends: &BTreeSet<Ipv4Addr>,
    balanced: &dyn Fn(&SockPeer) -> bool,
) -> Result<Destroyed, Error> {
    let diag = Diag::open()?;
    let mut destroyed = Destroyed::default();
    for (protocol, states) in [(IPPROTO_TCP, TCP_STATES), (IPPROTO_UDP, UDP_STATES)] {
        let doomed: Vec<[u8; SOCKID_LEN]> = diag
            .dump(protocol, states)?
            .into_iter()
            .filter(|id| {
                let peer = peer_of(id);
                backends.contains(&Ipv4Addr::from(peer.ip.to_ne_bytes())) && balanced(&peer)
            })
            .collect();
        for id in &doomed {
            // Gone already (closed since the dump): nothing to do.
            if diag.destroy(protocol, id)? {
                match protocol {
                    IPPROTO_TCP => destroyed.tcp += 1,
                    _ => destroyed.udp += 1,
                }
            }
        }
    }
    Ok(destroyed)
}

/// The `SHOAL_SOCK_ORIGINS` key of a socket: its cookie and its peer, in the maps' byte
/// order (addresses and ports in network order read as native integers, as
/// `bpf_sock_addr` holds them).
fn peer_of(id: &[u8; SOCKID_LEN]) -> SockPeer {
    let u32_at = |at: usize| u32::from_ne_bytes([id[at], id[at + 1], id[at + 2], id[at + 3]]);
    SockPeer {
        // The kernel splits the 64-bit cookie into cookie[0] (low) and cookie[1] (high).
        cookie: u64::from(u32_at(40)) | u64::from(u32_at(44)) << 32,
        // dst[0] (IPv4 uses the first word).
        ip: u32_at(20),
        // dport.
        port: u16::from_ne_bytes([id[2], id[3]]),
        pad: 0,
    }
}

/// A `NETLINK_SOCK_DIAG` socket in the calling thread's network namespace.
struct Diag {
    fd: std::os::fd::OwnedFd,
}

impl Diag {
    fn open() -> Result<Diag, Error> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )
        .map_err(io_error("opening a NETLINK_SOCK_DIAG socket"))?;
        connect(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(io_error("connecting a NETLINK_SOCK_DIAG socket"))?;
        Ok(Diag { fd })
    }

    /// The `inet_diag_sockid` of every IPv4 `protocol` socket of the namespace in one of
    /// `states`.
    fn dump(&self, protocol: u8, states: u32) -> Result<Vec<[u8; SOCKID_LEN]>, Error> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        self.send(request(
            SOCK_DIAG_BY_FAMILY,
            flags,
            protocol,
            states,
            &[0; SOCKID_LEN],
        ))?;
        let mut sockets = Vec::new();
        // The kernel fills a dump's datagrams up to the reader's buffer, at most 32 KiB.
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(io_error("reading a socket dump"))?;
            for (kind, payload) in messages(&buf[..n]) {
                match i32::from(kind) {
                    libc::NLMSG_DONE => return Ok(sockets),
                    libc::NLMSG_ERROR => {
                        let errno = nix::Error::from_raw(error_of(payload));
                        return Err(io_error("dumping sockets")(errno));
                    }
                    _ if kind == SOCK_DIAG_BY_FAMILY && payload.len() >= MSG_LEN => {
                        let mut id = [0u8; SOCKID_LEN];
                        id.copy_from_slice(&payload[MSG_SOCKID..MSG_SOCKID + SOCKID_LEN]);
                        sockets.push(id);
                    }
                    _ => {}
                }
            }
            if n == 0 {
                return Ok(sockets);
            }
        }
    }

    /// Destroys the `protocol` socket named by `id`; `false` if it no longer exists.
    fn destroy(&self, protocol: u8, id: &[u8; SOCKID_LEN]) -> Result<bool, Error> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        // Any state: the kernel finds the socket by its 4-tuple and checks the cookie.
        self.send(request(SOCK_DESTROY, flags, protocol, u32::MAX, id))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(io_error("reading a socket destroy's answer"))?;
            if n == 0 {
                return Ok(false);
            }
            for (kind, payload) in messages(&buf[..n]) {
                if i32::from(kind) == libc::NLMSG_ERROR {
                    return match error_of(payload) {
                        0 => Ok(true),
                        libc::ENOENT => Ok(false),
                        e => Err(io_error("destroying a socket (SOCK_DESTROY)")(
                            nix::Error::from_raw(e),
                        )),
                    };
                }
            }
        }
    }

    fn send(&self, message: Vec<u8>) -> Result<(), Error> {
        send(self.fd.as_raw_fd(), &message, MsgFlags::empty())
            .map_err(io_error("sending a NETLINK_SOCK_DIAG request"))?;
        Ok(())
    }
}

/// A netlink message: `nlmsghdr` and an `inet_diag_req_v2` for IPv4 `protocol` sockets in
/// `states`, naming `id`.
fn request(kind: u16, flags: u16, protocol: u8, states: u32, id: &[u8; SOCKID_LEN]) -> Vec<u8> {
    let mut message = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    message.extend_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // seq
    message.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    message.extend_from_slice(&[libc::AF_INET as u8, protocol, 0, 0]); // family, protocol, ext, pad
    message.extend_from_slice(&states.to_ne_bytes());
    message.extend_from_slice(id);
    message
}

/// The messages of one netlink datagram: (type, payload). Stops at a truncated one.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let payload = &buf[NLMSG_HDRLEN..len];
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, payload))
    })
}

/// The errno of an `NLMSG_ERROR` message (`struct nlmsgerr` starts with a negative errno); 0
/// for an acknowledgement.
fn error_of(payload: &[u8]) -> i32 {
    match payload.get(..4) {
        Some(raw) => -i32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]),
        None => libc::EPROTO,
    }
}

fn io_error(what: &'static str) -> impl Fn(nix::Error) -> Error {
    move |e| Error::Io {
        what,
        path: "NETLINK_SOCK_DIAG".into(),
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sockets_origins_key_is_read_in_the_maps_byte_order() {
        let mut id = [0u8; SOCKID_LEN];
        id[0..2].copy_from_slice(&40000u16.to_be_bytes()); // sport
        id[2..4].copy_from_slice(&80u16.to_be_bytes()); // dport
        id[4..8].copy_from_slice(&[10, 0, 0, 9]); // src
        id[20..24].copy_from_slice(&[10, 0, 0, 3]); // dst
        let cookie: u64 = 0x1234_5678_9abc_def0;
        id[40..44].copy_from_slice(&(cookie as u32).to_ne_bytes());
        id[44..48].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        let peer = peer_of(&id);
        assert_eq!(peer.cookie, cookie);
        // As the programs write it: `user_ip4` and the low 16 bits of `user_port`.
        assert_eq!(peer.ip, u32::from_ne_bytes([10, 0, 0, 3]));
        assert_eq!(peer.port, u16::from_ne_bytes(80u16.to_be_bytes()));
    }

    #[test]
    fn requests_are_an_nlmsghdr_and_an_inet_diag_req_v2() {
        let id = [7u8; SOCKID_LEN];
        let message = request(SOCK_DESTROY, 5, IPPROTO_UDP, UDP_STATES, &id);
        assert_eq!(message.len(), 72);
        assert_eq!(&message[..4], &72u32.to_ne_bytes());
        assert_eq!(&message[4..6], &SOCK_DESTROY.to_ne_bytes());
        assert_eq!(&message[16..20], &[libc::AF_INET as u8, IPPROTO_UDP, 0, 0]);
        assert_eq!(&message[20..24], &UDP_STATES.to_ne_bytes());
        assert_eq!(&message[24..], &id);
        let parsed: Vec<(u16, &[u8])> = messages(&message).collect();
        assert_eq!(parsed, vec![(SOCK_DESTROY, &message[16..])]);
    }
}
