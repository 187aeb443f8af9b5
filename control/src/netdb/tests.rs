//! Three (or four) in-process members on loopback with fast SWIM timers. Every wait polls with a
//! deadline; nothing relies on a bare sleep for synchronisation.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::oneshot;

use super::*;

const KEY: [u8; 32] = [7; 32];

/// The members tests use, each with its node key (as the CA would have issued it).
const NAMES: [&str; 7] = ["a", "b", "c", "d", "m", "x", "z"];

fn node_keys() -> &'static HashMap<String, SigningKey> {
    static KEYS: OnceLock<HashMap<String, SigningKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        NAMES
            .iter()
            .map(|n| (n.to_string(), SigningKey::generate().expect("key")))
            .collect()
    })
}

/// What the managers would send: every member's key but z's (a node they never admitted).
fn certified() -> HashMap<String, Vec<u8>> {
    node_keys()
        .iter()
        .filter(|(n, _)| *n != "z")
        .map(|(n, k)| (n.clone(), k.public_key().to_vec()))
        .collect()
}

fn config(node: &str, keys: Vec<[u8; 32]>) -> NetDbConfig {
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    NetDbConfig {
        keys,
        signing_key: node_keys().get(node).cloned(),
        peer_keys: certified(),
        push_pull_every: Duration::from_secs(2),
        tombstone_ttl: Duration::from_secs(60),
        probe_period: Duration::from_millis(200),
        down_drain: Duration::from_secs(1),
        ..NetDbConfig::new(node, bind, KEY)
    }
}

struct Node {
    db: NetDb,
    stop: Option<oneshot::Sender<()>>,
}

async fn node(name: &str, keys: Vec<[u8; 32]>) -> Node {
    let (tx, rx) = oneshot::channel::<()>();
    let db = NetDb::start(config(name, keys), async move {
        let _ = rx.await;
    })
    .await
    .expect("start");
    Node { db, stop: Some(tx) }
}

fn ep(net: &str, id: &str, node: &str, last: u8) -> Endpoint {
    Endpoint {
        network_id: net.into(),
        endpoint_id: id.into(),
        node_id: node.into(),
        ip: Ipv4Addr::new(10, 0, 0, last),
        mac: [2, 0, 0, 0, 0, last],
        vtep: Ipv4Addr::LOCALHOST,
        service: "web".into(),
        vip: None,
        aliases: vec!["w".into()],
        service_aliases: vec![],
        draining: false,
    }
}

async fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(db: &NetDb, net: &str) -> Vec<String> {
    let mut v: Vec<_> = db
        .endpoints(net)
        .into_iter()
        .map(|e| e.endpoint_id)
        .collect();
    v.sort();
    v
}

async fn cluster() -> (Node, Node, Node) {
    let a = node("a", vec![KEY]).await;
    let b = node("b", vec![KEY]).await;
    let c = node("c", vec![KEY]).await;
    for n in [&a, &b, &c] {
        n.db.join_network("n1");
    }
    b.db.join(&[a.db.bound()]).await.expect("b joins");
    c.db.join(&[a.db.bound()]).await.expect("c joins");
    eventually("full membership", Duration::from_secs(5), || {
        [&a, &b, &c]
            .iter()
            .all(|n| n.db.members().iter().filter(|m| m.2).count() == 2)
    })
    .await;
    (a, b, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_delete_down_and_rejoin() {
    let (a, b, mut c) = cluster().await;
    let mut events = b.db.subscribe();
    a.db.put_endpoint(ep("n1", "t1", "a", 2));
    c.db.put_endpoint(ep("n1", "t3", "c", 3));
    eventually("puts reach everyone", Duration::from_secs(2), || {
        [&a, &b, &c]
            .iter()
            .all(|n| ids(&n.db, "n1") == ["t1", "t3"])
    })
    .await;
    assert!(matches!(events.try_recv(), Ok(Change::Upsert(_))));

    a.db.delete_endpoint("n1", "t1");
    eventually("delete propagates", Duration::from_secs(2), || {
        [&a, &b, &c].iter().all(|n| ids(&n.db, "n1") == ["t3"])
    })
    .await;

    // c stops: its endpoint drains on a and b (declared down), then is withdrawn.
    let _ = c.stop.take().map(|s| s.send(()));
    let draining = |db: &NetDb| {
        let e = db.endpoints("n1");
        e.len() == 1 && e[0].endpoint_id == "t3" && e[0].draining
    };
    eventually("c's endpoints draining", Duration::from_secs(5), || {
        [&a, &b].iter().all(|n| draining(&n.db))
    })
    .await;
    eventually("c's endpoints withdrawn", Duration::from_secs(5), || {
        [&a, &b].iter().all(|n| ids(&n.db, "n1").is_empty())
    })
    .await;

    // c restarts with a fresh table (new port), re-puts t3 and a new t4, and rejoins.
    c = node("c", vec![KEY]).await;
    c.db.put_endpoint(ep("n1", "t3", "c", 3));
    c.db.put_endpoint(ep("n1", "t4", "c", 4));
    c.db.join(&[b.db.bound()]).await.expect("c rejoins");
    eventually("c's endpoints back", Duration::from_secs(5), || {
        [&a, &b, &c]
            .iter()
            .all(|n| ids(&n.db, "n1") == ["t3", "t4"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_network_and_late_joiner() {
    let (a, b, c) = cluster().await;
    a.db.put_endpoint(ep("n1", "t1", "a", 2));
    a.db.put_endpoint(ep("n2", "x1", "a", 5));
    eventually("t1 on b and c", Duration::from_secs(2), || {
        [&b, &c].iter().all(|n| ids(&n.db, "n1") == ["t1"])
    })
    .await;
    // b is not on n2: it holds nothing there.
    assert!(b.db.endpoints("n2").is_empty());

    c.db.leave_network("n1");
    assert!(c.db.endpoints("n1").is_empty());
    a.db.put_endpoint(ep("n1", "t2", "a", 3));
    eventually("t2 on b", Duration::from_secs(2), || {
        ids(&b.db, "n1") == ["t1", "t2"]
    })
    .await;
    assert!(c.db.endpoints("n1").is_empty(), "c left n1");

    // A late joiner gets the full table by push-pull, before any broadcast reaches it.
    let d = node("d", vec![KEY]).await;
    d.db.join_network("n1");
    d.db.join(&[c.db.bound()]).await.expect("d joins via c");
    // c does not hold n1 any more, so d's first push-pull had nothing for it; join a holder.
    d.db.join(&[a.db.bound()]).await.expect("d joins via a");
    assert_eq!(ids(&d.db, "n1"), ["t1", "t2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_without_loss() {
    let (a, b, c) = cluster().await;
    let new = [9u8; 32];
    for n in [&a, &b, &c] {
        n.db.set_keys(vec![KEY, new], 0);
    }
    for n in [&a, &b, &c] {
        n.db.set_keys(vec![KEY, new], 1);
    }
    a.db.put_endpoint(ep("n1", "t1", "a", 2));
    for n in [&a, &b, &c] {
        n.db.set_keys(vec![new], 0);
    }
    a.db.put_endpoint(ep("n1", "t2", "a", 3));
    eventually("both puts everywhere", Duration::from_secs(2), || {
        [&b, &c].iter().all(|n| ids(&n.db, "n1") == ["t1", "t2"])
    })
    .await;
    // Nobody was declared down during rotation.
    for n in [&a, &b, &c] {
        assert!(n.db.members().iter().all(|m| m.2), "{:?}", n.db.members());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_garbage_are_counted() {
    let a = node("a", vec![KEY]).await;
    let x = node("x", vec![[1u8; 32]]).await;
    assert!(x.db.join(&[a.db.bound()]).await.is_err());
    eventually("undecryptable counted", Duration::from_secs(2), || {
        a.db.stats().dropped_undecryptable >= 1
    })
    .await;
    assert!(a.db.members().is_empty());

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let to = a.db.bound();
    sock.send_to(b"xx", to).await.expect("send");
    let mut bad_version = vec![0u8; 64];
    bad_version[0] = 42;
    sock.send_to(&bad_version, to).await.expect("send");
    let mut unknown_key = vec![0u8; 64];
    unknown_key[0] = wire::VERSION;
    sock.send_to(&unknown_key, to).await.expect("send");
    // A valid encryption of junk: decrypts, but foca cannot parse it.
    let junk = Keyring::new(&[KEY], 0).seal(&[0xff; 40]).expect("seal");
    sock.send_to(&junk, to).await.expect("send");
    eventually("all garbage counted", Duration::from_secs(2), || {
        let s = a.db.stats();
        s.dropped_truncated >= 1 && s.dropped_malformed >= 2 && s.dropped_undecryptable >= 2
    })
    .await;
    // Still serving.
    let b = node("b", vec![KEY]).await;
    b.db.join(&[a.db.bound()]).await.expect("a still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_gets_member_list_and_seed_lists_it() {
    let (a, b, c) = cluster().await;
    let d = node("d", vec![KEY]).await;
    d.db.join(&[a.db.bound()]).await.expect("d joins via a");
    // No wait: b and c came in a's push-pull list, a answered the announce before `join`
    // returned, and a listed d before answering.
    let alive = |db: &NetDb| -> Vec<String> {
        db.members()
            .into_iter()
            .filter(|m| m.2)
            .map(|m| m.0)
            .collect()
    };
    assert_eq!(alive(&d.db), ["a", "b", "c"], "d's view right after join");
    assert!(
        alive(&a.db).contains(&"d".to_string()),
        "seed a lists d once join returns: {:?}",
        a.db.members()
    );
    assert_eq!(a.db.alive_members(), 3);
    // The others hear of d by gossip.
    eventually("b and c see d", Duration::from_secs(5), || {
        [&b, &c].iter().all(|n| n.db.alive_members() == 3)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_member_is_withdrawn_everywhere() {
    let (a, b, c) = cluster().await;
    c.db.put_endpoint(ep("n1", "t3", "c", 3));
    a.db.put_endpoint(ep("n1", "t1", "a", 2));
    eventually("puts reach everyone", Duration::from_secs(2), || {
        [&a, &b, &c]
            .iter()
            .all(|n| ids(&n.db, "n1") == ["t1", "t3"])
    })
    .await;
    // c can neither be read nor read anyone: a partition, not a graceful leave, so only SWIM
    // probing can find out (suspect after a failed probe, down 3 probe periods later).
    c.db.set_keys(vec![[3u8; 32]], 0);
    eventually(
        "c's endpoint withdrawn on a and b",
        Duration::from_secs(10),
        || [&a, &b].iter().all(|n| ids(&n.db, "n1") == ["t1"]),
    )
    .await;
    for n in [&a, &b] {
        let m = n.db.members();
        assert!(m.iter().any(|m| m.0 == "c" && !m.2), "c is down in {m:?}");
        assert_eq!(
            n.db.alive_members(),
            1,
            "a and b still see each other: {m:?}"
        );
    }
}

/// A connection to `to` from `source` (any address of 127/8 is ours on loopback, so each
/// stands for another host).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source");
    socket.connect(to).await.expect("connect")
}

/// Reads until the peer closes the connection (EOF or reset); panics after `within`.
async fn closed_by_peer(s: &mut tokio::net::TcpStream, within: Duration, what: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: still open after {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_announcing_64_mib_is_closed_after_the_header() {
    use tokio::io::AsyncWriteExt;
    let a = node("a", vec![KEY]).await;
    let mut s = connect_from([127, 0, 0, 1], a.db.bound()).await;
    // The old frame's length prefix (64 MiB), then the 64 MiB it announces, without the key.
    // Nothing past the 34-byte header is read: the write fails once a closes the connection,
    // long before 64 MiB went through.
    let announced: u32 = 64 << 20;
    let chunk = vec![0x5a_u8; 1 << 20];
    let mut result = s.write_all(&announced.to_be_bytes()).await;
    let mut sent = 0usize;
    while result.is_ok() && sent < announced as usize {
        result = s.write_all(&chunk).await;
        sent += chunk.len();
    }
    assert!(
        result.is_err(),
        "a read the whole announced body of a stranger ({sent} bytes)"
    );
    // Its "header" does not open: a bad version here (0x04), a failed tag in general.
    let stats = a.db.stats();
    assert_eq!(stats.received, 1, "{stats:?}");
    assert_eq!(
        stats.dropped_malformed + stats.dropped_undecryptable,
        1,
        "{stats:?}"
    );
    assert_eq!(stats.pushpull_timed_out, 0, "{stats:?}");
    let malformed = stats.dropped_malformed;

    // A sealed header from a member announcing more than a frame may hold is refused too,
    // before its body is read.
    let keys = Keyring::new(&[KEY], 0);
    let header = keys
        .seal(&(frame::MAX_BODY as u32 + 1).to_be_bytes())
        .expect("seal");
    assert_eq!(header.len(), frame::HEADER_LEN);
    let mut s = connect_from([127, 0, 0, 1], a.db.bound()).await;
    s.write_all(&header).await.expect("write header");
    closed_by_peer(&mut s, Duration::from_secs(2), "oversized announcement").await;
    assert_eq!(a.db.stats().dropped_malformed, malformed + 1);

    // Still serving.
    let b = node("b", vec![KEY]).await;
    b.db.join(&[a.db.bound()]).await.expect("a still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_are_dropped_at_the_deadline() {
    use tokio::io::AsyncWriteExt;
    let a = node("a", vec![KEY]).await;
    // Half a header, then nothing: dropped at the header deadline.
    let mut slow_header = connect_from([127, 0, 0, 2], a.db.bound()).await;
    slow_header
        .write_all(&[wire::VERSION; 10])
        .await
        .expect("write");
    // A valid header announcing 1 KiB, then 100 bytes of it: dropped at the transfer deadline.
    let header = Keyring::new(&[KEY], 0)
        .seal(&1024u32.to_be_bytes())
        .expect("seal");
    let mut slow_body = connect_from([127, 0, 0, 3], a.db.bound()).await;
    slow_body.write_all(&header).await.expect("write");
    slow_body.write_all(&[0; 100]).await.expect("write");

    let margin = Duration::from_secs(5);
    closed_by_peer(
        &mut slow_header,
        frame::HEADER_DEADLINE + margin,
        "slow header",
    )
    .await;
    closed_by_peer(
        &mut slow_body,
        frame::transfer_deadline(1024) + margin,
        "slow body",
    )
    .await;
    let stats = a.db.stats();
    assert_eq!(stats.pushpull_timed_out, 2, "{stats:?}");
    assert_eq!(stats.dropped_undecryptable, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_refused_while_members_converge() {
    use tokio::io::AsyncWriteExt;
    let (a, b, c) = cluster().await;
    let limits = PushPullLimits::default();

    // --- 1. strangers on 10 addresses open 6 silent connections each: each address gets its
    //        share, the first 8 fill the total, the rest are refused at once.
    let mut held = Vec::new();
    for host in 10..20u8 {
        for _ in 0..6 {
            held.push(connect_from([127, 0, 0, host], a.db.bound()).await);
        }
    }
    // At most 32 of the 60 get in (fewer if a member's push-pull holds a place meanwhile).
    let over = 60 - limits.max_connections as u64;
    eventually("refusals counted", Duration::from_secs(5), || {
        let s = a.db.stats();
        s.pushpull_refused_source >= 1
            && s.pushpull_refused_busy >= 6
            && s.pushpull_refused_source + s.pushpull_refused_busy >= over
    })
    .await;

    // --- 2. meanwhile the members converge (broadcasts do not need push-pull)
    b.db.put_endpoint(ep("n1", "t2", "b", 2));
    eventually("b's endpoint everywhere", Duration::from_secs(5), || {
        [&a, &c].iter().all(|n| ids(&n.db, "n1") == ["t2"])
    })
    .await;

    // --- 3. the silent ones are dropped at the header deadline, freeing their places: a late
    //        joiner gets the whole table through a.
    for s in &mut held {
        let within = frame::HEADER_DEADLINE + Duration::from_secs(5);
        closed_by_peer(s, within, "silent connection").await;
    }
    drop(held);
    assert!(a.db.stats().pushpull_timed_out >= 1);
    let d = node("d", vec![KEY]).await;
    d.db.join_network("n1");
    d.db.join(&[a.db.bound()]).await.expect("d joins via a");
    assert_eq!(ids(&d.db, "n1"), ["t2"]);

    // --- 4. a source opening connections one after the other faster than its rate
    for _ in 0..limits.per_source_burst * 3 {
        let mut s = connect_from([127, 0, 0, 30], a.db.bound()).await;
        let _ = s.write_all(&[0; frame::HEADER_LEN]).await;
        closed_by_peer(&mut s, Duration::from_secs(5), "garbage header").await;
    }
    let s = a.db.stats();
    assert!(s.pushpull_refused_rate >= 1, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_entries_are_dropped_everywhere_and_owners_still_converge() {
    let (a, b, c) = cluster().await;
    // --- 1. m, a member like any other (it holds the gossip key and its own node key).
    let m = node("m", vec![KEY]).await;
    m.db.join_network("n1");
    m.db.join(&[a.db.bound()]).await.expect("m joins");
    a.db.put_endpoint(ep("n1", "t1", "a", 2));
    let all = [&a, &b, &c, &m];
    eventually("t1 everywhere", Duration::from_secs(5), || {
        all.iter().all(|n| ids(&n.db, "n1") == ["t1"])
    })
    .await;

    // --- 2. m broadcasts records in a's name: t1 moved to its own address, a new endpoint,
    //        a tombstone of t1; signed with its own key, or not at all; and one of z, a node
    //        the managers never certified.
    let mut moved = ep("n1", "t1", "a", 66);
    moved.vtep = Ipv4Addr::new(192, 0, 2, 66);
    let forged = |endpoint: Endpoint, owner: &str, clock: u64, deleted: bool, by: &str| {
        let rec = table::Record {
            endpoint,
            owner: owner.into(),
            clock,
            deleted,
            signature: Vec::new(),
        };
        let signature = node_keys()[by].sign(&rec);
        table::Record { signature, ..rec }
    };
    // The tombstone of t1 replaces the moved t1 in m's broadcast queue (same entry, newer):
    // three forgeries in a's and b's names reach each member.
    let forgeries = [
        forged(moved.clone(), "a", 1000, false, "m"),
        forged(ep("n1", "evil", "a", 67), "a", 1001, false, "m"),
        forged(ep("n1", "t1", "a", 2), "a", 1002, true, "m"),
        table::Record {
            signature: Vec::new(),
            ..forged(ep("n1", "bogus", "b", 68), "b", 1003, false, "m")
        },
    ];
    let before: Vec<NetDbStats> = [&a, &b, &c].iter().map(|n| n.db.stats()).collect();
    {
        let mut t = lock(&m.db.shared.table);
        for rec in forgeries {
            t.push_raw(rec);
        }
        t.push_raw(forged(ep("n1", "ghost", "z", 69), "z", 1004, false, "z"));
    }
    let _ = m.db.shared.cmd.send(Cmd::Flush);
    eventually(
        "every forgery counted on a, b and c",
        Duration::from_secs(5),
        || {
            [&a, &b, &c].iter().zip(&before).all(|(n, was)| {
                let s = n.db.stats();
                s.dropped_forged >= was.dropped_forged + 3
                    && s.dropped_unknown_owner > was.dropped_unknown_owner
            })
        },
    )
    .await;
    for n in [&a, &b, &c] {
        assert_eq!(ids(&n.db, "n1"), ["t1"], "forged entries installed");
        assert_eq!(n.db.endpoints("n1")[0], ep("n1", "t1", "a", 2), "t1 moved");
    }

    // --- 3. a push-pull brings nothing forged either (m never installed its forgeries).
    let d = node("d", vec![KEY]).await;
    d.db.join_network("n1");
    d.db.join(&[m.db.bound()]).await.expect("d joins via m");
    assert_eq!(ids(&d.db, "n1"), ["t1"]);

    // --- 4. the real owner's changes still converge, tombstones included, with a clock far
    //        below the forgeries'.
    a.db.put_endpoint(ep("n1", "t2", "a", 3));
    a.db.delete_endpoint("n1", "t1");
    let all = [&a, &b, &c, &m, &d];
    eventually(
        "a's put and delete everywhere",
        Duration::from_secs(5),
        || all.iter().all(|n| ids(&n.db, "n1") == ["t2"]),
    )
    .await;
    // Each version was checked once per node, not once per copy (retransmits, push-pulls).
    let verified = b.db.stats().entries_verified;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        b.db.stats().entries_verified,
        verified,
        "copies verified again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_an_owner_learned_late_are_taken_when_its_key_arrives() {
    let a = node("a", vec![KEY]).await;
    let mut cfg = config("b", vec![KEY]);
    cfg.peer_keys.remove("a");
    let (_stop, rx) = oneshot::channel::<()>();
    let b = NetDb::start(cfg, async move {
        let _ = rx.await;
    })
    .await
    .expect("start");
    b.join_network("n1");
    a.db.put_endpoint(ep("n1", "t1", "a", 2));
    b.join(&[a.db.bound()]).await.expect("b joins");
    assert!(b.endpoints("n1").is_empty(), "taken without a's key");
    assert!(b.stats().dropped_unknown_owner >= 1);
    b.set_peer_keys(certified());
    assert_eq!(ids(&b, "n1"), ["t1"]);
}
