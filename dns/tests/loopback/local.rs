//! Names answered from the records: A/AAAA/ANY/MX/PTR, NXDOMAIN, dnsrr, truncation, TCP,
//! scope, record swaps, stop.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{Name, RData, RecordType};
use shoal_dns::{NetworkInfo, Records, ServerConfig};
use tokio::net::TcpStream;

use crate::harness::*;

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queries_for_service_tasks_alias_and_suffix() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let cases: &[(&str, Vec<Ipv4Addr>)] = &[
        ("web.", vec![ip(10, 0, 1, 2)]),
        ("WEB.", vec![ip(10, 0, 1, 2)]),
        ("web.back.", vec![ip(10, 0, 2, 2)]),
        ("Web.Ngx_Net.", vec![ip(10, 0, 1, 2)]),
        ("web.2.", vec![ip(10, 0, 1, 4)]),
        ("web.2.ngx_net.", vec![ip(10, 0, 1, 4)]),
        ("web.1.back.", vec![ip(10, 0, 2, 3)]),
        ("web.3.taskweb3n1.", vec![ip(10, 0, 1, 5)]),
    ];
    for (name, want) in cases {
        let reply = udp_exchange(s.udp, &query(name, RecordType::A)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(reply.metadata.authoritative, "{name}: AA");
        assert_eq!(&a_answers(&reply), want, "{name}");
        assert!(reply.answers.iter().all(|r| r.ttl == 600), "{name}: TTL");
    }
    let reply = udp_exchange(s.udp, &query("tasks.web.", RecordType::A)).await;
    let got: HashSet<_> = a_answers(&reply).into_iter().collect();
    assert_eq!(
        got,
        HashSet::from([ip(10, 0, 1, 3), ip(10, 0, 1, 4), ip(10, 0, 1, 5)])
    );
    let counters = s.server.counters();
    assert_eq!(counters.answered_local, cases.len() as u64 + 1);
    assert_eq!(counters.queries_udp, cases.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_mx_and_unknown_types_are_empty_noerror_and_any_is_a() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    for qtype in [
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::Unknown(65400),
    ] {
        let reply = udp_exchange(s.udp, &query("web.", qtype)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{qtype}"
        );
        assert!(reply.answers.is_empty(), "{qtype}: {:?}", reply.answers);
        assert!(reply.metadata.authoritative, "{qtype}");
    }
    let reply = udp_exchange(s.udp, &query("web.", RecordType::ANY)).await;
    assert_eq!(a_answers(&reply), vec![ip(10, 0, 1, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptr_answers_task_alias_and_vip_service_with_the_network() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let ptr = |name: &str| RData::PTR(PTR(Name::from_ascii(name).unwrap()));
    let reply = udp_exchange(s.udp, &query("4.1.0.10.in-addr.arpa.", RecordType::PTR)).await;
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].data, ptr("web.2.taskweb2n1.ngx_net."));
    assert_eq!(reply.answers[0].ttl, 600);
    let reply = udp_exchange(s.udp, &query("2.2.0.10.in-addr.arpa.", RecordType::PTR)).await;
    assert_eq!(reply.answers[0].data, ptr("web.back."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_names_without_records_are_nxdomain_never_forwarded() {
    // An upstream that would answer anything: it must not be asked.
    let upstream = FakeUpstream::start().await;
    let config = ServerConfig {
        upstreams: vec![upstream.addr],
        ..ServerConfig::default()
    };
    let s = serve(sample_records(), config, SCOPE);
    let names = [
        "nosuch.",
        "tasks.nosuch.",
        "nosuch.ngx_net.",
        "secret.",
        "rr.back.",
        "tasks.secret.",
    ];
    for name in names {
        let reply = udp_exchange(s.udp, &query(name, RecordType::A)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
        assert!(reply.metadata.authoritative, "{name}: AA");
    }
    let counters = s.server.counters();
    assert_eq!(counters.nxdomain, names.len() as u64);
    assert_eq!(counters.forwarded, 0);
    assert_eq!(
        upstream
            .udp_queries
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsrr_order_varies_across_queries() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let want: HashSet<_> = (0..10).map(|i| ip(10, 0, 3, i)).collect();
    let mut orders = HashSet::new();
    for _ in 0..30 {
        let got = a_answers(&udp_exchange(s.udp, &query("rr.", RecordType::A)).await);
        assert_eq!(got.iter().copied().collect::<HashSet<_>>(), want);
        assert_eq!(got.len(), 10);
        orders.insert(got);
    }
    // 30 shuffles of 10 addresses all equal has probability (1/10!)^29.
    assert!(orders.len() > 1, "dnsrr answered the same order 30 times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_queries_are_answered() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let reply = tcp_exchange(s.tcp, &query("web.back.", RecordType::A)).await;
    assert_eq!(a_answers(&reply), vec![ip(10, 0, 2, 2)]);
    assert_eq!(s.server.counters().queries_tcp, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_dnsrr_answer_truncates_over_udp_and_tcp_gets_all() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let msg = query("big.", RecordType::A);
    let raw = udp_raw(s.udp, &msg.to_vec().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert!(
        raw.len() <= 512,
        "UDP reply without EDNS is {} bytes",
        raw.len()
    );
    let udp = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert!(udp.metadata.truncation, "TC must be set");
    assert!(udp.answers.len() < 100);

    let edns = udp_exchange(s.udp, &with_edns(query("big.", RecordType::A), 4096)).await;
    assert!(
        !edns.metadata.truncation,
        "4096-byte EDNS fits 100 A records"
    );
    assert_eq!(edns.answers.len(), 100);

    let tcp = tcp_exchange(s.tcp, &msg).await;
    assert!(!tcp.metadata.truncation);
    let got: HashSet<_> = a_answers(&tcp).into_iter().collect();
    assert_eq!(got, (0..100).map(|i| ip(10, 0, 4, i)).collect());
    assert_eq!(s.server.counters().truncated, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_order_decides_and_tasks_of_one_server_are_independent() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let (_back_first, udp, _) = serve_on(&s.server, &["n2", "n1"]);
    let (_other_only, other_udp, _) = serve_on(&s.server, &["n3"]);
    let a = a_answers(&udp_exchange(s.udp, &query("web.", RecordType::A)).await);
    let b = a_answers(&udp_exchange(udp, &query("web.", RecordType::A)).await);
    assert_eq!((a, b), (vec![ip(10, 0, 1, 2)], vec![ip(10, 0, 2, 2)]));
    let secret = udp_exchange(other_udp, &query("secret.", RecordType::A)).await;
    assert_eq!(a_answers(&secret), vec![ip(10, 0, 9, 9)]);
    let web = udp_exchange(other_udp, &query("web.", RecordType::A)).await;
    assert_eq!(web.metadata.response_code, ResponseCode::NXDomain);
    // Counters are node-wide.
    assert_eq!(s.server.counters().queries_udp, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_records_answer_the_next_query() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let before = udp_exchange(s.udp, &query("web.", RecordType::A)).await;
    assert_eq!(a_answers(&before), vec![ip(10, 0, 1, 2)]);
    s.view.replace(Records::new(
        vec![NetworkInfo {
            id: "n1".into(),
            name: "ngx_net".into(),
        }],
        vec![shoal_dns::EndpointRecord {
            network_id: "n1".into(),
            task_id: "new".into(),
            ip: ip(10, 0, 1, 77),
            service: "web".into(),
            vip: None,
            aliases: vec![],
            service_aliases: Vec::new(),
        }],
    ));
    let after = udp_exchange(s.udp, &query("web.", RecordType::A)).await;
    assert_eq!(a_answers(&after), vec![ip(10, 0, 1, 77)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_the_sockets() {
    let s = serve(sample_records(), ServerConfig::default(), SCOPE);
    let (udp, tcp) = (s.udp, s.tcp);
    assert!(!a_answers(&udp_exchange(udp, &query("web.", RecordType::A)).await).is_empty());
    // An open connection is closed too, not only the listener.
    let mut open = TcpStream::connect(tcp).await.unwrap();
    s.task.stop();
    eventually("the TCP listener is closed", || async {
        TcpStream::connect(tcp).await.is_err()
    })
    .await;
    assert_eq!(read_framed(&mut open).await, None, "open connection closed");
    let msg = query("web.", RecordType::A).to_vec().unwrap();
    assert_eq!(udp_raw(udp, &msg, Duration::from_millis(300)).await, None);
}

#[test]
fn serve_task_works_from_a_thread_without_a_runtime() {
    let server = shoal_dns::DnsServer::new(
        ServerConfig::default(),
        shoal_dns::RecordsView::new(Records::empty()),
    )
    .unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let _task = server.serve_task(udp, tcp, vec![]).unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let msg = query("nosuchname.", RecordType::A).to_vec().unwrap();
    client.send_to(&msg, addr).unwrap();
    let mut buf = [0u8; 512];
    let n = client
        .recv(&mut buf)
        .expect("an answer from the serving thread");
    assert_eq!(
        buf[3] & 0x0f,
        3,
        "NXDOMAIN for a single label we do not have"
    );
    assert!(n >= 12);
}
