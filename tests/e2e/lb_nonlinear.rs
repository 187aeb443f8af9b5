//! The VIP load balancer's tc programs on real traffic through a real veth pair, with skbs
//! whose headers are not in the linear part (the programs read headers in place and must pull
//! them first: `bpf_skb_pull_data`), and with large TCP sends (GSO skbs: headers linear,
//! payload in page fragments, partial checksums). The receiving kernels check every checksum
//! the NAT touched: a datagram or segment with a wrong one never reaches its socket.
//!
//! How the headers end up outside the linear part: an `AF_PACKET` socket with
//! `PACKET_VNET_HDR` builds the skb with only the virtio header's `hdr_len` bytes linear (here
//! the 14-byte Ethernet header) and the rest in page fragments, once the frame is a page or
//! more (`packet_alloc_skb`); veths and the bridge pass the skb on as it is, so the programs on
//! the client's sandbox end see 14 linear bytes: from the client (`shoal_tc_ingress`), and
//! from the backend, sent the same way through the bridge (`shoal_tc_egress`).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    thread,
    time::Duration,
};

use etherparse::PacketBuilder;
use nix::libc;
use shoal_common::lb::{LbEvent, mac_for_ip};
use shoal_dataplane::{Dataplane, LbTable, netns::run_in};
use shoal_tests::{Netns, names::unique_prefix};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
const MTU: &str = "9000";
/// Over a page, so `AF_PACKET` puts everything past the virtio header's `hdr_len` in page
/// fragments.
const PAYLOAD: usize = 6000;
const UDP_PORT: u16 = 9999;
const CLIENT_PORT: u16 = 40000;
const TCP_PORT: u16 = 8080;

/// The overlay's sandbox as the agent builds it, in small: a bridge (`br0`) with two task
/// veths, the client's (`t0`, its sandbox end `s0`, where the programs are) and the backend's
/// (`b0`, its sandbox end `s1`), at a jumbo MTU; a VIP whose one backend is `b0`'s address.
struct Topology {
    client: Netns,
    backend: Netns,
    _sandbox: Netns,
    dp: Dataplane,
}

fn topology() -> Topology {
    let prefix = unique_prefix();
    let client = Netns::create(&format!("{prefix}-c"));
    let backend = Netns::create(&format!("{prefix}-b"));
    let sandbox = Netns::create(&format!("{prefix}-sb"));
    sandbox.ip(&["link", "add", "br0", "mtu", MTU, "type", "bridge"]);
    sandbox.ip(&["link", "set", "br0", "up"]);
    let mac = |ip: Ipv4Addr| {
        mac_for_ip(ip.octets())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    for (ns, dev, peer, ip) in [
        (&client, "t0", "s0", CLIENT),
        (&backend, "b0", "s1", BACKEND),
    ] {
        sandbox.ip(&[
            "link",
            "add",
            peer,
            "mtu",
            MTU,
            "type",
            "veth",
            "peer",
            "name",
            dev,
            "netns",
            ns.name(),
        ]);
        sandbox.ip(&["link", "set", peer, "master", "br0", "up"]);
        ns.ip(&["link", "set", dev, "address", &mac(ip), "mtu", MTU]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    let mut dp = Dataplane::load(None).unwrap();
    let table: LbTable = [(VIP, [BACKEND].into())].into();
    dp.lb_mut().apply(&table).unwrap();
    run_in(Path::new(&sandbox.path()), || dp.attach_tc("s0"))
        .unwrap()
        .unwrap();
    Topology {
        client,
        backend,
        _sandbox: sandbox,
        dp,
    }
}

/// An `AF_PACKET` socket on `dev` in `ns` that sends frames behind a virtio-net header whose
/// `hdr_len` keeps only the Ethernet header linear.
fn vnet_packet_socket(ns: &Netns, dev: &'static str) -> OwnedFd {
    run_in(Path::new(&ns.path()), move || {
        // SAFETY: plain syscalls on a socket this closure creates and hands back owned.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = OwnedFd::from_raw_fd(fd);
            let on: libc::c_int = 1;
            let set = libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_VNET_HDR,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(
                set,
                0,
                "PACKET_VNET_HDR: {}",
                std::io::Error::last_os_error()
            );
            let name = std::ffi::CString::new(dev).unwrap();
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(addr.sll_ifindex > 0, "{dev}: no such interface");
            let bound = libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            fd
        }
    })
    .unwrap()
}

/// Sends `frame` on `socket` with only its Ethernet header in the skb's linear part.
fn send_split(socket: &OwnedFd, frame: &[u8]) {
    // struct virtio_net_hdr: flags, gso_type (none), hdr_len = 14 (little endian), gso_size,
    // csum_start, csum_offset.
    let mut out = vec![0u8, 0, 14, 0, 0, 0, 0, 0, 0, 0];
    out.extend_from_slice(frame);
    // SAFETY: a write of an owned buffer to an owned socket.
    let sent = unsafe { libc::send(socket.as_raw_fd(), out.as_ptr().cast(), out.len(), 0) };
    assert_eq!(
        sent,
        out.len() as isize,
        "AF_PACKET send: {}",
        std::io::Error::last_os_error()
    );
}

/// An Ethernet/IPv4/UDP frame (checksums computed) between two of the topology's addresses.
fn udp_frame(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let builder =
        PacketBuilder::ethernet2(mac_for_ip(src.ip().octets()), mac_for_ip(dst.ip().octets()))
            .ipv4(src.ip().octets(), dst.ip().octets(), 64)
            .udp(src.port(), dst.port());
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame
}

fn payload(seed: u8) -> Vec<u8> {
    (0..PAYLOAD)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed)
        .collect()
}

fn event(dp: &Dataplane, which: LbEvent) -> u64 {
    dp.lb()
        .events()
        .unwrap()
        .into_iter()
        .find(|(e, _)| *e == which)
        .map_or(0, |(_, n)| n)
}

#[test]
fn datagrams_with_headers_outside_the_linear_part_are_balanced_and_reverse_nated() {
    let t = topology();
    let in_ns = |ns: &Netns, addr: SocketAddrV4| {
        let socket = run_in(Path::new(&ns.path()), move || UdpSocket::bind(addr))
            .unwrap()
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    };
    let client_addr = SocketAddrV4::new(CLIENT, CLIENT_PORT);
    let backend_addr = SocketAddrV4::new(BACKEND, UDP_PORT);
    let vip_addr = SocketAddrV4::new(VIP, UDP_PORT);
    let client = in_ns(&t.client, client_addr);
    let server = in_ns(&t.backend, backend_addr);
    let mut buf = vec![0u8; 65536];

    // --- 1. the task sends to the VIP: DNAT-ed onto the backend after a pull (tc ingress)
    let task_side = vnet_packet_socket(&t.client, "t0");
    let request = payload(1);
    send_split(&task_side, &udp_frame(client_addr, vip_addr, &request));
    let (len, from) = server
        .recv_from(&mut buf)
        .expect("the datagram to the VIP did not reach the backend (dropped, or a bad checksum)");
    assert_eq!(from, client_addr.into(), "the client's address is kept");
    assert_eq!(&buf[..len], &request[..]);

    // --- 2. the backend answers, headers outside the linear part too: from the VIP (egress)
    let backend_side = vnet_packet_socket(&t.backend, "b0");
    let answer = payload(2);
    send_split(
        &backend_side,
        &udp_frame(backend_addr, client_addr, &answer),
    );
    let (len, from) = client
        .recv_from(&mut buf)
        .expect("the backend's answer did not reach the client (dropped, or a bad checksum)");
    assert_eq!(from, vip_addr.into(), "the answer comes from the VIP");
    assert_eq!(&buf[..len], &answer[..]);

    // --- 3. the same flow from ordinary sockets (linear headers) takes the same entries
    server.send_to(b"again", client_addr).unwrap();
    let (len, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((from, &buf[..len]), (vip_addr.into(), &b"again"[..]));

    let counters = t.dp.lb().counters().unwrap();
    let vip = counters.iter().find(|c| c.backend.is_none()).unwrap();
    assert_eq!(vip.counters.flows, 1, "one flow balanced: {counters:?}");
    assert_eq!(event(&t.dp, LbEvent::ReplyNat), 2);
    assert_eq!(event(&t.dp, LbEvent::Malformed), 0);
}

#[test]
fn large_tcp_transfers_through_a_vip_keep_their_checksums() {
    // GSO/TSO skbs through the veth: headers linear, payload in page fragments, partial
    // checksums (the NAT adjusts only the pseudo-header sum); the ARP for the VIP is answered
    // by the programs.
    let t = topology();
    let listener = run_in(Path::new(&t.backend.path()), || {
        TcpListener::bind(SocketAddrV4::new(BACKEND, TCP_PORT))
    })
    .unwrap()
    .unwrap();
    const SIZE: usize = 4 << 20;
    let server = thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut got = vec![0u8; SIZE];
        conn.read_exact(&mut got).unwrap();
        // Echo it back, as large writes.
        conn.write_all(&got).unwrap();
        (peer, got)
    });
    let mut conn = run_in(Path::new(&t.client.path()), || {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(VIP, TCP_PORT).into(),
            Duration::from_secs(5),
        )
    })
    .unwrap()
    .expect("connecting to the VIP");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let sent: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    conn.write_all(&sent).unwrap();
    let mut back = vec![0u8; SIZE];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(
        conn.peer_addr().unwrap(),
        SocketAddrV4::new(VIP, TCP_PORT).into()
    );
    let (peer, got) = server.join().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(CLIENT),
        "the client's address is kept"
    );
    assert!(got == sent, "the backend got the bytes as sent");
    assert!(back == sent, "the client got them back as sent");
    let counters = t.dp.lb().counters().unwrap();
    let vip = counters.iter().find(|c| c.backend.is_none()).unwrap();
    assert_eq!(vip.counters.flows, 1, "{counters:?}");
    assert_eq!(event(&t.dp, LbEvent::Malformed), 0);
    assert_eq!(event(&t.dp, LbEvent::BackendGone), 0);
}
