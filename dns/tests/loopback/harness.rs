//! Fixtures for the loopback tests: a served task on 127.0.0.1 ephemeral ports, a DNS client,
//! a fake upstream resolver, and a bounded wait.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shoal_dns::{
    DnsServer, EndpointRecord, NetworkInfo, Records, RecordsView, ServerConfig, TaskDns,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// How long any single exchange may take before the test fails: generous, never a timing claim.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The address the fake upstream answers for `example.com`.
pub const EXAMPLE_IP: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

/// Networks n1 "ngx_net" and n2 "back" (the default scope), and n3 "other" (outside it).
///
/// - `web`: vip service, VIP 10.0.1.2 on ngx_net, tasks 10.0.1.3-5, aliases `web.<slot>.<task>`
///   and `web.<slot>`; also on back with VIP 10.0.2.2 and task 10.0.2.3.
/// - `rr`: dnsrr service, 10 tasks 10.0.3.0-9 on ngx_net.
/// - `big`: dnsrr service, 100 tasks 10.0.4.0-99 on ngx_net.
/// - `secret`: on other only.
pub fn sample_records() -> Records {
    let net = |id: &str, name: &str| NetworkInfo {
        id: id.into(),
        name: name.into(),
    };
    let mut endpoints = Vec::new();
    let mut add = |net: &str, service: &str, slot: u32, ip: Ipv4Addr, vip: Option<Ipv4Addr>| {
        let task = format!("task{service}{slot}{net}");
        endpoints.push(EndpointRecord {
            network_id: net.into(),
            task_id: task.clone(),
            ip,
            service: service.into(),
            vip,
            aliases: vec![
                format!("{service}.{slot}.{task}"),
                format!("{service}.{slot}"),
            ],
            service_aliases: Vec::new(),
        });
    };
    for slot in 1..=3u8 {
        add(
            "n1",
            "web",
            slot.into(),
            Ipv4Addr::new(10, 0, 1, 2 + slot),
            Some(Ipv4Addr::new(10, 0, 1, 2)),
        );
    }
    add(
        "n2",
        "web",
        1,
        Ipv4Addr::new(10, 0, 2, 3),
        Some(Ipv4Addr::new(10, 0, 2, 2)),
    );
    for i in 0..10u8 {
        add(
            "n1",
            "rr",
            u32::from(i) + 1,
            Ipv4Addr::new(10, 0, 3, i),
            None,
        );
    }
    for i in 0..100u8 {
        add(
            "n1",
            "big",
            u32::from(i) + 1,
            Ipv4Addr::new(10, 0, 4, i),
            None,
        );
    }
    add("n3", "secret", 1, Ipv4Addr::new(10, 0, 9, 9), None);
    Records::new(
        vec![net("n1", "ngx_net"), net("n2", "back"), net("n3", "other")],
        endpoints,
    )
}

/// The default configuration, forwarding to `upstream`.
pub fn forwarding_to(upstream: SocketAddr) -> ServerConfig {
    ServerConfig {
        upstreams: vec![upstream],
        ..ServerConfig::default()
    }
}

/// The scope of the usual test task.
pub const SCOPE: &[&str] = &["n1", "n2"];

/// A task served on loopback: the same code path as 127.0.0.11:53 in a task netns.
pub struct Served {
    pub server: Arc<DnsServer>,
    pub view: Arc<RecordsView>,
    pub task: TaskDns,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// Serves `records` for one task with `scope`; call inside a runtime.
pub fn serve(records: Records, config: ServerConfig, scope: &[&str]) -> Served {
    let view = RecordsView::new(records);
    let server = DnsServer::new(config, Arc::clone(&view)).expect("starting the server");
    let (task, udp, tcp) = serve_on(&server, scope);
    Served {
        server,
        view,
        task,
        udp,
        tcp,
    }
}

/// Serves one more task of `server` on fresh loopback sockets.
pub fn serve_on(server: &Arc<DnsServer>, scope: &[&str]) -> (TaskDns, SocketAddr, SocketAddr) {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let scope = scope.iter().map(|s| s.to_string()).collect();
    let task = server.serve_task(udp, tcp, scope).unwrap();
    (task, udp_addr, tcp_addr)
}

/// A recursive query for `name`, with a random id.
pub fn query(name: &str, qtype: RecordType) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg
}

/// `msg` with an OPT record advertising `payload`.
pub fn with_edns(mut msg: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    msg.set_edns(edns);
    msg
}

/// Sends `bytes` over UDP and returns the raw reply, or `None` if none came within `wait`.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => Some(buf[..len].to_vec()),
        Ok(Err(err)) => panic!("UDP receive from {server} failed: {err}"),
        Err(_) => None,
    }
}

/// A UDP query and its parsed reply (which must echo the id and be a response).
pub async fn udp_exchange(server: SocketAddr, msg: &Message) -> Message {
    let reply = udp_raw(server, &msg.to_vec().unwrap(), PATIENCE)
        .await
        .unwrap_or_else(|| panic!("no UDP reply from {server} to {msg}"));
    check_reply(msg, &reply)
}

/// A TCP query on a fresh connection and its parsed reply.
pub async fn tcp_exchange(server: SocketAddr, msg: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    write_framed(&mut stream, &msg.to_vec().unwrap()).await;
    let reply = read_framed(&mut stream)
        .await
        .unwrap_or_else(|| panic!("TCP connection to {server} closed without a reply to {msg}"));
    check_reply(msg, &reply)
}

fn check_reply(msg: &Message, reply: &[u8]) -> Message {
    let reply = Message::from_vec(reply).unwrap_or_else(|e| panic!("unparseable reply: {e}"));
    assert_eq!(reply.metadata.id, msg.metadata.id, "reply id");
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    reply
}

pub async fn write_framed(stream: &mut TcpStream, bytes: &[u8]) {
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.unwrap();
}

/// The next length-prefixed message, or `None` if the peer closed (or reset) the connection.
pub async fn read_framed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut msg).await.ok()?;
        Some(msg)
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("no TCP reply and no close within {PATIENCE:?}"))
}

/// The A addresses of an answer, in answer order.
pub fn a_answers(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// Polls `cond` until it holds, failing the test after [`PATIENCE`] with `what`.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small authoritative-ish resolver on one loopback port (UDP and TCP), playing the upstream.
///
/// - `example.com A` -> 93.184.216.34
/// - `big.example.com A` -> over UDP: TC and no answers; over TCP: 100 A records
/// - `spoof.example.com A` -> first a reply with the wrong id, then one for another question,
///   then the real answer 1.1.1.1 (UDP)
/// - anything else -> NXDOMAIN
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub udp_queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        // The forwarder uses one address for UDP and TCP: find a port free for both.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let udp_task = {
            let count = Arc::clone(&udp_queries);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((len, src)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let Ok(query) = Message::from_vec(&buf[..len]) else {
                        continue;
                    };
                    for reply in udp_replies(&query) {
                        udp.send_to(&reply, src).await.unwrap();
                    }
                }
            })
        };
        let tcp_task = {
            let count = Arc::clone(&tcp_queries);
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let count = Arc::clone(&count);
                    tokio::spawn(async move {
                        while let Some(bytes) = read_framed(&mut stream).await {
                            count.fetch_add(1, Ordering::SeqCst);
                            let Ok(query) = Message::from_vec(&bytes) else {
                                return;
                            };
                            let reply = answer(&query, false);
                            write_framed(&mut stream, &reply.to_vec().unwrap()).await;
                        }
                    });
                }
            })
        };
        FakeUpstream {
            addr,
            udp_queries,
            tcp_queries,
            tasks: vec![udp_task, tcp_task],
        }
    }
}

fn udp_replies(query: &Message) -> Vec<Vec<u8>> {
    let name = query.queries[0].name().to_ascii().to_ascii_lowercase();
    let mut replies = Vec::new();
    if name == "spoof.example.com." {
        let mut wrong_id = answer(query, true);
        wrong_id.metadata.id = query.metadata.id.wrapping_add(1);
        wrong_id.answers[0].data = RData::A(A(Ipv4Addr::new(6, 6, 6, 6)));
        replies.push(wrong_id.to_vec().unwrap());
        let mut wrong_question = answer(query, true);
        wrong_question.queries[0].name = Name::from_ascii("other.example.com.").unwrap();
        wrong_question.answers[0].data = RData::A(A(Ipv4Addr::new(6, 6, 6, 7)));
        replies.push(wrong_question.to_vec().unwrap());
    }
    replies.push(answer(query, true).to_vec().unwrap());
    replies
}

fn answer(query: &Message, udp: bool) -> Message {
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let q = query.queries[0].clone();
    let name = q.name().to_ascii().to_ascii_lowercase();
    let a = |ip: Ipv4Addr| Record::from_rdata(q.name().clone(), 300, RData::A(A(ip)));
    match name.as_str() {
        "example.com." => {
            reply.add_answer(a(EXAMPLE_IP));
        }
        "spoof.example.com." => {
            reply.add_answer(a(Ipv4Addr::new(1, 1, 1, 1)));
        }
        "big.example.com." if udp => reply.metadata.truncation = true,
        "big.example.com." => {
            reply.add_answers((0..100u8).map(|i| a(Ipv4Addr::new(10, 9, 0, i))));
        }
        _ => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    reply.add_query(q);
    reply
}
