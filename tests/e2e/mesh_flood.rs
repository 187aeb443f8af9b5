//! A SYN flood from spoofed sources on a published port, end to end: the routing mesh must
//! neither keep the flood's half-open flows (they used to stay forever, two entries each)
//! nor let them push an established connection out of its flow table. One node, `shoal
//! whoami` behind `-p 8080:80`, the outside client on the underlay holding a connection open
//! while it sends 20,000 SYNs from random addresses of 198.18.0.0/15 over a raw socket.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket,
};
use shoal_common::{
    lb::{FLOW_REPLY, FlowKey},
    mesh::{FLOW_UNREPLIED, MeshFlow},
};
use shoal_dataplane::{bpffs, mesh::pinned_flow_entries};
use shoal_tests::{
    Cluster,
    agent::shoal_bin,
    task_net::{http_get, in_netns, tcp_connect},
    wait_until,
};

use crate::support::{metric, new_connections, ok, running, served_by};

const SYNS: u32 = 20_000;
/// The figure: what may be left of the flood's entries this long after it.
const WITHIN: Duration = Duration::from_secs(45);

/// Whether `raw` (a map's network-order address) is one of the flood's spoofed sources.
fn spoofed(raw: u32) -> bool {
    let octets = raw.to_ne_bytes();
    octets[0] == 198 && octets[1] & 0xfe == 18
}

/// The flood's entries in the node's pinned flow tables: forward entries keyed by a spoofed
/// client, reply entries leading back to one.
#[derive(Debug)]
struct FloodEntries {
    confirmed: usize,
    unconfirmed: usize,
    /// Unconfirmed reply entries the task answered (its SYN-ACK went back): what confirming
    /// flows on the task's answer alone would have let into the confirmed table.
    answered: usize,
}

fn flood_entries(pin_dir: &Path) -> FloodEntries {
    let flows = pinned_flow_entries(pin_dir).unwrap();
    let of_flood = |table: &[(FlowKey, MeshFlow)]| -> Vec<(FlowKey, MeshFlow)> {
        table
            .iter()
            .filter(|(k, f)| spoofed(k.src_ip) || spoofed(f.peer_ip))
            .copied()
            .collect()
    };
    let unconfirmed = of_flood(&flows.unconfirmed);
    FloodEntries {
        confirmed: of_flood(&flows.confirmed).len(),
        answered: unconfirmed
            .iter()
            .filter(|(k, f)| k.direction == FLOW_REPLY && f.flags & FLOW_UNREPLIED == 0)
            .count(),
        unconfirmed: unconfirmed.len(),
    }
}

/// A small xorshift generator: random enough for spoofed addresses, ports and ISNs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
}

/// Sends `count` TCP SYNs to `to` from random addresses of 198.18.0.0/15, random ports and
/// ISNs, over a raw socket made in `netns` (the kernel routes them out of its underlay
/// interface as it would any packet to `to`). Full checksums, as from a real wire. About
/// 100,000 a second: a flood, but one the test underlay's veths carry without losses.
fn syn_flood(netns: &Path, to: SocketAddrV4, count: u32) {
    let fd: OwnedFd = in_netns(netns, || {
        socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::Raw,
        )
    })
    .expect("raw socket");
    let dest = SockaddrIn::from(to);
    let mut rng = Rng(u64::from(std::process::id()) << 20 | 0x5eed);
    for i in 0..count {
        // Bursts of 128: a veth drops what its peer's XDP ring (256 frames) cannot take.
        if i % 128 == 127 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) | (rng.next() & 0x1_ffff));
        let sport = 1024 + (rng.next() % 64_000) as u16;
        let builder = etherparse::PacketBuilder::ipv4(src.octets(), to.ip().octets(), 64)
            .tcp(sport, to.port(), rng.next(), 64240)
            .syn();
        let mut packet = Vec::with_capacity(builder.size(0));
        builder.write(&mut packet, &[]).unwrap();
        // A full socket buffer is waited out, briefly; nothing else may fail.
        let mut tries = 0;
        while let Err(e) = sendto(fd.as_raw_fd(), &packet, &dest, MsgFlags::empty()) {
            tries += 1;
            assert!(
                tries < 100 && matches!(e, nix::Error::ENOBUFS | nix::Error::EAGAIN),
                "sending a spoofed SYN: {e}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn a_syn_flood_leaves_no_half_open_flows_and_established_connections_alone() {
    // --- 1. one node publishing whoami on 8080
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    let bin = shoal_bin().display().to_string();
    ok(
        &cluster,
        0,
        &[
            "service", "create", "--detach", "--name", "web", "-p", "8080:80", "--", &bin,
            "whoami", "--port", "80",
        ],
    );
    let web = running(&cluster, "web", 1);
    let to = SocketAddrV4::new(cluster.nodes[0].address, 8080);
    let client = cluster.client_ns().path();
    let client = Path::new(&client);
    wait_until(Duration::from_secs(10), "8080 to be served", || {
        new_connections(client, SocketAddr::V4(to), 1).map(|_| ())
    });
    let pin_dir = bpffs::node_pin_dir(Path::new(bpffs::DEFAULT_ROOT), &cluster.nodes[0].node_id());

    // --- 2. a connection opened and kept open: confirmed by its handshake
    let mut held = tcp_connect(client, SocketAddr::V4(to)).unwrap();
    let first = served_by(&http_get(&mut held, "/").unwrap());
    assert_eq!(first, web[0].id);
    let before = pinned_flow_entries(&pin_dir).unwrap();
    let held_port = held.local_addr().unwrap().port().to_be();
    let held_entries: Vec<_> = before
        .confirmed
        .iter()
        .filter(|(k, f)| k.src_port == held_port || (k.direction == 1 && f.peer_port == held_port))
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(
        held_entries.len(),
        2,
        "the held connection's forward and reply entries, confirmed: {:?}",
        before.confirmed
    );
    let forwarded = "shoal_mesh_events_total{event=\"forwarded\"}";
    let forwarded_before = metric(&cluster, 0, forwarded);

    // --- 3. 20,000 SYNs from random spoofed sources
    let started = Instant::now();
    syn_flood(client, to, SYNS);
    let sent_in = started.elapsed();
    // Every SYN balanced onto the task (a few may share a spoofed 5-tuple: fewer flows).
    let balanced = wait_until(Duration::from_secs(10), "the flood to be balanced", || {
        let n = metric(&cluster, 0, forwarded) - forwarded_before;
        if n >= u64::from(SYNS) * 99 / 100 {
            Ok(n)
        } else {
            Err(format!("{n} new flows"))
        }
    });
    let right_after = flood_entries(&pin_dir);
    eprintln!(
        "flood: {SYNS} SYNs sent in {sent_in:?}, {balanced} balanced; entries right after: \
         {right_after:?} (before: {} confirmed, the held connection's and a probe's)",
        before.confirmed.len()
    );
    assert_eq!(right_after.confirmed, 0, "no flood flow may be confirmed");
    // The task answers spoofed SYNs like any (the mesh is not the endpoint): its SYN-ACK
    // cannot be what confirms a flow.
    eprintln!(
        "flood: the task answered {} of the flood's flows",
        right_after.answered
    );

    // --- 4. within the 45 s, at most 1% of the flood's entries are left
    let limit = (2 * SYNS / 100) as usize;
    let left = wait_until(
        WITHIN.saturating_sub(started.elapsed()),
        "the flood's entries to be forgotten",
        || match flood_entries(&pin_dir) {
            FloodEntries {
                confirmed: 0,
                unconfirmed,
                ..
            } if unconfirmed <= limit => Ok(unconfirmed),
            left => Err(format!("{left:?}")),
        },
    );
    eprintln!(
        "flood: {left} entries left {:?} after it began",
        started.elapsed()
    );

    // --- 5. the connection opened before the flood still works, on its task, and its
    // entries were never evicted
    assert_eq!(served_by(&http_get(&mut held, "/").unwrap()), first);
    let after = pinned_flow_entries(&pin_dir).unwrap();
    for key in &held_entries {
        assert!(
            after.confirmed.iter().any(|(k, _)| k == key),
            "the held connection's entry {key:?} is gone"
        );
    }
    let events = |name: &str| {
        metric(
            &cluster,
            0,
            &format!("shoal_mesh_events_total{{event=\"{name}\"}}"),
        )
    };
    let (expired, evicted) = (events("unconfirmed_expired"), events("unconfirmed_evicted"));
    eprintln!(
        "flood: counted {expired} unconfirmed entries expired, {evicted} evicted; confirmed \
         {} evicted",
        events("evicted")
    );
    assert_eq!(events("evicted"), 0, "no confirmed entry evicted");
    assert!(
        expired + evicted >= balanced * 2 * 99 / 100,
        "the flood's {balanced} flows went uncounted: {expired} expired, {evicted} evicted"
    );
}
