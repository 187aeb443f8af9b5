//! Untrusted input and floods: garbage is counted and answered FORMERR where possible, the
//! server keeps serving, TCP connections are capped and time out, forwards are bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_dns::ServerConfig;
use tokio::net::{TcpStream, UdpSocket};

use crate::harness::*;

/// Header: id 0xbeef, RD, one question, nothing else.
const HEADER_ONLY: [u8; 12] = [0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];

/// A query whose name is 305 bytes long (five 60-byte labels), over the 255-byte limit.
fn long_name_query() -> Vec<u8> {
    let mut msg = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        msg.push(60);
        msg.extend(std::iter::repeat_n(b'a', 60));
    }
    msg.extend_from_slice(&[0, 0, 1, 0, 1]);
    msg
}

fn rcode_of(reply: &[u8]) -> (u16, ResponseCode) {
    let msg = Message::from_vec(reply).unwrap();
    (msg.metadata.id, msg.metadata.response_code)
}

async fn still_answers(s: &Served) {
    let reply = udp_exchange(s.udp, &query("web.", RecordType::A)).await;
    assert_eq!(
        a_answers(&reply),
        vec![std::net::Ipv4Addr::new(10, 0, 1, 2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_garbage_is_counted_and_the_server_keeps_answering() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let quiet = Duration::from_millis(300);

    // Shorter than a header: dropped.
    assert_eq!(udp_raw(s.udp, &[1, 2, 3], quiet).await, None);
    // A header promising a question that is not there: FORMERR under its id.
    let reply = udp_raw(s.udp, &HEADER_ONLY, PATIENCE).await.unwrap();
    assert_eq!(rcode_of(&reply), (0xbeef, ResponseCode::FormErr));
    // A name over 255 bytes: FORMERR.
    let reply = udp_raw(s.udp, &long_name_query(), PATIENCE).await.unwrap();
    assert_eq!(rcode_of(&reply), (0x1234, ResponseCode::FormErr));
    // A response sent as a query: dropped, never answered.
    let mut response = query("web.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert_eq!(
        udp_raw(s.udp, &response.to_vec().unwrap(), quiet).await,
        None
    );
    assert_eq!(s.server.counters().malformed, 4);

    // Random bytes of random lengths, from a fixed seed so a failure reproduces. One at a
    // time, each read before the next, so the kernel drops none of them.
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..300u64 {
        let len = rng.random_range(0..600);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        socket.send_to(&bytes, s.udp).await.unwrap();
        let read = 4 + i + 1;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while s.server.counters().queries_udp < read {
            assert!(
                tokio::time::Instant::now() < deadline,
                "random datagram {i} ({len} bytes) never read"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    still_answers(&s).await;
    assert!(
        s.server.counters().malformed > 4,
        "random bytes counted as malformed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_garbage_gets_formerr_and_the_connection_stays_usable() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let mut stream = TcpStream::connect(s.tcp).await.unwrap();
    // Too short to answer: nothing comes back, the connection stays.
    write_framed(&mut stream, &[1, 2, 3]).await;
    write_framed(&mut stream, &HEADER_ONLY).await;
    let reply = read_framed(&mut stream).await.unwrap();
    assert_eq!(rcode_of(&reply), (0xbeef, ResponseCode::FormErr));
    write_framed(&mut stream, &long_name_query()).await;
    let reply = read_framed(&mut stream).await.unwrap();
    assert_eq!(rcode_of(&reply), (0x1234, ResponseCode::FormErr));

    let msg = query("web.", RecordType::A);
    write_framed(&mut stream, &msg.to_vec().unwrap()).await;
    let reply = Message::from_vec(&read_framed(&mut stream).await.unwrap()).unwrap();
    assert_eq!(reply.metadata.id, msg.metadata.id);
    assert_eq!(
        a_answers(&reply),
        vec![std::net::Ipv4Addr::new(10, 0, 1, 2)]
    );
    let counters = s.server.counters();
    assert_eq!((counters.queries_tcp, counters.malformed), (4, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_over_the_limit_are_closed_at_once() {
    let config = ServerConfig {
        max_tcp_connections: 2,
        ..ServerConfig::default()
    };
    let s = serve(sample_records(), config, SCOPE);
    // Two connections, each proven accepted and served.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(s.tcp).await.unwrap();
        write_framed(&mut stream, &query("web.", RecordType::A).to_vec().unwrap()).await;
        assert!(read_framed(&mut stream).await.is_some());
        held.push(stream);
    }
    let mut extra = TcpStream::connect(s.tcp).await.unwrap();
    assert_eq!(
        read_framed(&mut extra).await,
        None,
        "third connection closed"
    );
    assert_eq!(s.server.counters().refused, 1);

    // Closing one frees its slot.
    drop(held.pop());
    eventually("a new connection is served once one closed", || async {
        let Ok(mut stream) = TcpStream::connect(s.tcp).await else {
            return false;
        };
        write_framed(&mut stream, &query("web.", RecordType::A).to_vec().unwrap()).await;
        read_framed(&mut stream).await.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_are_closed() {
    let config = ServerConfig {
        tcp_idle_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let s = serve(sample_records(), config, SCOPE);
    let mut stream = TcpStream::connect(s.tcp).await.unwrap();
    // Half a length prefix, then silence.
    tokio::io::AsyncWriteExt::write_all(&mut stream, &[0])
        .await
        .unwrap();
    assert_eq!(
        read_framed(&mut stream).await,
        None,
        "idle connection closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_flood_to_a_dead_upstream_is_bounded_and_refused_beyond_the_limit() {
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let limit = 128;
    let config = ServerConfig {
        upstreams: vec![dead.local_addr().unwrap()],
        upstream_timeout: Duration::from_secs(3),
        max_pending_forwards: limit,
        ..ServerConfig::default()
    };
    let s = serve(sample_records(), config, SCOPE);
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let refused = Arc::new(AtomicUsize::new(0));
    let servfail = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (socket, refused, servfail) = (socket.clone(), refused.clone(), servfail.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, _)) = socket.recv_from(&mut buf).await {
                match Message::from_vec(&buf[..len]).map(|m| m.metadata.response_code) {
                    Ok(ResponseCode::Refused) => refused.fetch_add(1, Ordering::SeqCst),
                    Ok(ResponseCode::ServFail) => servfail.fetch_add(1, Ordering::SeqCst),
                    other => panic!("unexpected reply to a flood query: {other:?}"),
                };
            }
        })
    };

    let mut peak = 0;
    for i in 0..2000u32 {
        let msg = query(&format!("q{i}.example.com."), RecordType::A);
        socket.send_to(&msg.to_vec().unwrap(), s.udp).await.unwrap();
        if i % 50 == 49 {
            // Pace the sender so the kernel does not drop datagrams we want counted.
            tokio::time::sleep(Duration::from_millis(2)).await;
            peak = peak.max(s.task.forwards_in_flight());
        }
    }
    assert!(peak <= limit, "{peak} forwards in flight, limit {limit}");
    assert_eq!(peak, limit, "the flood filled the limit");

    eventually(
        "every flood query is answered REFUSED or SERVFAIL",
        || async {
            let c = s.server.counters();
            c.queries_udp > 0 && c.refused + c.upstream_failures == c.queries_udp
        },
    )
    .await;
    let c = s.server.counters();
    assert!(
        c.refused > 0,
        "queries beyond the limit were refused: {c:?}"
    );
    assert_eq!(c.forwarded + c.refused, c.queries_udp, "{c:?}");
    assert_eq!(c.forwarded, c.upstream_failures, "{c:?}");
    // The permit is released just after the SERVFAIL is counted.
    eventually("every forward slot is released", || async {
        s.task.forwards_in_flight() == 0
    })
    .await;
    eventually(
        "the client saw the REFUSED and SERVFAIL replies",
        || async { refused.load(Ordering::SeqCst) > 0 && servfail.load(Ordering::SeqCst) > 0 },
    )
    .await;
    reader.abort();
    still_answers(&s).await;
}
