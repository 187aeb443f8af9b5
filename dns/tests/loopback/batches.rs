//! Datagrams arriving faster than they are served: read and answered a batch at a time, every
//! response to its own sender and query, whatever path each query takes; IPv6 sockets too.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::harness::*;

/// What a query of the burst must get back.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Answer(ResponseCode, Vec<Ipv4Addr>),
    /// Too short to answer: nothing comes back.
    Nothing,
}

/// The burst's queries, by kind: the fast path's, the general path's (EDNS with an option, PTR),
/// NXDOMAIN, forwarded, malformed, dropped.
fn kind(i: u16) -> (Vec<u8>, Expect) {
    let mut msg = match i % 7 {
        0 => query("web.", RecordType::A),
        1 => query("Web.1.", RecordType::A),
        2 => {
            let mut m = with_edns(query("web.back.", RecordType::A), 1232);
            if let Some(edns) = m.edns.as_mut() {
                edns.options_mut()
                    .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                        65001,
                        vec![1, 2],
                    ));
            }
            m
        }
        3 => query("nosuch.", RecordType::A),
        4 => query("example.com.", RecordType::A),
        5 => {
            // id, RD, one question that is not there: FORMERR under its id.
            let bytes = [(i >> 8) as u8, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            return (
                bytes.to_vec(),
                Expect::Answer(ResponseCode::FormErr, vec![]),
            );
        }
        _ => return (vec![1, 2, 3], Expect::Nothing),
    };
    msg.metadata.id = i;
    let expect = match i % 7 {
        0 => Expect::Answer(ResponseCode::NoError, vec![Ipv4Addr::new(10, 0, 1, 2)]),
        1 => Expect::Answer(ResponseCode::NoError, vec![Ipv4Addr::new(10, 0, 1, 3)]),
        2 => Expect::Answer(ResponseCode::NoError, vec![Ipv4Addr::new(10, 0, 2, 2)]),
        3 => Expect::Answer(ResponseCode::NXDomain, vec![]),
        _ => Expect::Answer(ResponseCode::NoError, vec![EXAMPLE_IP]),
    };
    (msg.to_vec().unwrap(), expect)
}

/// `clients` sockets bound to `local` each send `per_client` queries to `server` without
/// waiting, then read: each answer must be the one its query expects, none missing.
async fn burst(server: SocketAddr, local: &str, clients: u16, per_client: u16) {
    let mut sockets = Vec::new();
    let mut expected = Vec::new();
    for c in 0..clients {
        let socket = UdpSocket::bind(local).await.unwrap();
        let mut want = HashMap::new();
        for n in 0..per_client {
            let id = c * per_client + n;
            let (bytes, expect) = kind(id);
            socket.send_to(&bytes, server).await.unwrap();
            if expect != Expect::Nothing {
                want.insert(id, expect);
            }
        }
        sockets.push(socket);
        expected.push(want);
    }
    let mut buf = vec![0u8; 4096];
    for (socket, mut want) in sockets.into_iter().zip(expected) {
        while !want.is_empty() {
            let (len, from) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no answer to {:?}", want.keys()))
                .unwrap();
            assert_eq!(from, server);
            let msg = Message::from_vec(&buf[..len]).unwrap();
            let got = Expect::Answer(msg.metadata.response_code, a_answers(&msg));
            let id = msg.metadata.id;
            assert_eq!(want.remove(&id), Some(got), "answer to query {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_answered_query_by_query_and_counted() {
    let upstream = FakeUpstream::start().await;
    let s = serve(sample_records(), forwarding_to(upstream.addr), SCOPE);
    // 8 x 14 = 112 datagrams: several batches, small enough for the socket's receive buffer.
    let (clients, per_client) = (8u16, 14u16);
    burst(s.udp, "127.0.0.1:0", clients, per_client).await;
    let total = u64::from(clients * per_client);
    let per_kind = total / 7;
    let c = s.server.counters();
    assert_eq!(c.queries_udp, total, "{c:?}");
    assert_eq!(c.answered_local, 3 * per_kind, "{c:?}");
    assert_eq!(c.nxdomain, per_kind, "{c:?}");
    assert_eq!(c.forwarded, per_kind, "{c:?}");
    assert_eq!(c.malformed, 2 * per_kind, "{c:?}");
    assert_eq!(c.refused + c.upstream_failures + c.truncated, 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_ipv4_sockets_of_one_server_are_both_served() {
    let Ok(udp6) = std::net::UdpSocket::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let upstream = FakeUpstream::start().await;
    let s = serve(sample_records(), forwarding_to(upstream.addr), SCOPE);
    let tcp6 = std::net::TcpListener::bind("[::1]:0").unwrap();
    let addr6 = udp6.local_addr().unwrap();
    let scope = SCOPE.iter().map(|s| s.to_string()).collect();
    let _task6 = s.server.serve_task(udp6, tcp6, scope).unwrap();
    for _ in 0..3 {
        burst(addr6, "[::1]:0", 3, 10).await;
        burst(s.udp, "127.0.0.1:0", 3, 10).await;
    }
    let c = s.server.counters();
    assert_eq!(c.queries_udp, 3 * 2 * 3 * 10, "{c:?}");
}
