//! Names that are not shoal's: relayed from the upstreams, TCP on truncation, mismatched
//! replies ignored, dead and refusing upstreams, SERVFAIL.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shoal_dns::ServerConfig;
use tokio::time::Instant;

use crate::harness::*;

fn config(upstreams: Vec<std::net::SocketAddr>, timeout: Duration) -> ServerConfig {
    ServerConfig {
        upstreams,
        upstream_timeout: timeout,
        ..ServerConfig::default()
    }
}

/// A UDP port that answers nothing: bound (so no ICMP unreachable) and never read.
fn dead_upstream() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// A UDP port nothing listens on: queries get ICMP port unreachable at once.
fn refusing_upstream() -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_are_forwarded_and_the_answer_relayed() {
    let upstream = FakeUpstream::start().await;
    let s = serve(
        sample_records(),
        config(vec![upstream.addr], Duration::from_secs(5)),
        SCOPE,
    );
    let reply = udp_exchange(s.udp, &query("Example.com.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_answers(&reply), vec![EXAMPLE_IP]);
    assert!(reply.metadata.recursion_available, "RA relayed");
    assert!(!reply.metadata.authoritative, "not our answer");
    assert_eq!(
        reply.queries[0].name().to_ascii(),
        "Example.com.",
        "client's question echoed"
    );

    // The upstream's NXDOMAIN (here for an unknown PTR) is relayed, not counted as ours.
    let reply = udp_exchange(s.udp, &query("9.9.9.9.in-addr.arpa.", RecordType::PTR)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(!reply.metadata.authoritative);

    let counters = s.server.counters();
    assert_eq!(counters.forwarded, 2);
    assert_eq!(counters.nxdomain, 0);
    assert_eq!(counters.upstream_failures, 0);
    assert_eq!(upstream.udp_queries.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_reply_is_retried_over_tcp() {
    let upstream = FakeUpstream::start().await;
    let s = serve(
        sample_records(),
        config(vec![upstream.addr], Duration::from_secs(5)),
        SCOPE,
    );
    let msg = query("big.example.com.", RecordType::A);

    // A UDP client without EDNS: the full upstream answer (over TCP) does not fit 512 bytes.
    let raw = udp_raw(s.udp, &msg.to_vec().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert!(raw.len() <= 512, "{} bytes", raw.len());
    let udp = Message::from_vec(&raw).unwrap();
    assert!(udp.metadata.truncation);
    assert!(!udp.answers.is_empty() && udp.answers.len() < 100);
    assert_eq!(
        upstream.tcp_queries.load(Ordering::SeqCst),
        1,
        "TC made us ask over TCP"
    );

    // The client's retry over TCP gets everything.
    let tcp = tcp_exchange(s.tcp, &msg).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(a_answers(&tcp).len(), 100);
    assert_eq!(s.server.counters().truncated, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_with_the_wrong_id_or_question_are_ignored() {
    let upstream = FakeUpstream::start().await;
    let s = serve(
        sample_records(),
        config(vec![upstream.addr], Duration::from_secs(5)),
        SCOPE,
    );
    let reply = udp_exchange(s.udp, &query("spoof.example.com.", RecordType::A)).await;
    assert_eq!(a_answers(&reply), vec![std::net::Ipv4Addr::new(1, 1, 1, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_gets_servfail_within_the_timeout() {
    let dead = dead_upstream();
    let timeout = Duration::from_millis(500);
    let s = serve(
        sample_records(),
        config(vec![dead.local_addr().unwrap()], timeout),
        SCOPE,
    );
    let started = Instant::now();
    let reply = udp_exchange(s.udp, &query("example.com.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    // It waited for the upstream rather than failing at once.
    assert!(
        started.elapsed() >= timeout / 2,
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(s.server.counters().upstream_failures, 1);

    // The same over TCP.
    let reply = tcp_exchange(s.tcp, &query("example.com.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(s.server.counters().upstream_failures, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_upstream_answers_after_a_dead_or_refusing_one() {
    let upstream = FakeUpstream::start().await;
    let dead = dead_upstream();
    let s = serve(
        sample_records(),
        config(
            vec![dead.local_addr().unwrap(), upstream.addr],
            Duration::from_secs(2),
        ),
        SCOPE,
    );
    let reply = udp_exchange(s.udp, &query("example.com.", RecordType::A)).await;
    assert_eq!(
        a_answers(&reply),
        vec![EXAMPLE_IP],
        "second upstream answers in its share"
    );

    let s = serve(
        sample_records(),
        config(
            vec![refusing_upstream(), upstream.addr],
            Duration::from_secs(2),
        ),
        SCOPE,
    );
    let reply = udp_exchange(s.udp, &query("example.com.", RecordType::A)).await;
    assert_eq!(a_answers(&reply), vec![EXAMPLE_IP]);
    assert_eq!(s.server.counters().upstream_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstreams_is_servfail_at_once() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let reply = udp_exchange(s.udp, &query("example.com.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let counters = s.server.counters();
    assert_eq!((counters.upstream_failures, counters.forwarded), (1, 0));
}
