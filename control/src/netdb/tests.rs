//! Three (or four) in-process members on loopback with fast SWIM timers. Every wait polls with a
//! deadline; nothing relies on a bare sleep for synchronisation.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::oneshot;

use super::*;

const KEY: [u8; 32] = [7; 32];

fn config(node: &str, keys: Vec<[u8; 32]>) -> NetDbConfig {
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    NetDbConfig {
        keys,
        push_pull_every: Duration::from_secs(2),
        tombstone_ttl: Duration::from_secs(60),
        probe_period: Duration::from_millis(200),
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

    // c stops: its endpoint is withdrawn on a and b.
    let _ = c.stop.take().map(|s| s.send(()));
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
