//! Who may call what on 2377, RPC by RPC: every call of the `Cluster` service (read from
//! `control/proto/shoal.proto`, so a new RPC without a row here fails the test) with a
//! manager's, a worker's, a removed node's, another CA's and no certificate. And who a node is:
//! a join carrying another node's ID is refused.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Duration};

use shoal_control::{
    api::{
        AddRaftMemberRequest, AdmitRequest, ConfigSpec, Empty, EventsRequest, ExecRequest,
        HeartbeatRequest, InitRequest, JoinSwarmRequest, JoinTokenRequest, LeaveRequest,
        ListTasksRequest, NetworkRef, NetworkSpec, ObjectRef, RaftRequest, RemoveNodeRequest,
        RenewCertificateRequest, RootCaRequest, SecretSpec, ServiceRef, ServiceSpec,
        TaskLogsRequest, UnlockKeyRequest, UpdateNodeRequest, UpdateObjectRequest,
        UpdateServiceRequest, UpdateSwarmRequest, cluster_client::ClusterClient,
    },
    cluster::Role,
    pki::{ClusterCa, JoinToken, connect_for_join},
};
use shoal_dataplane::netns::run_in;
use shoal_tests::{Cluster, wait_until};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

/// What a call got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Past authorization (the call itself may still fail: a bogus request, a missing object).
    Served,
    /// `PermissionDenied`: known, but not allowed.
    Denied,
    /// `Unauthenticated`: no certificate, or one for a node the swarm does not know.
    Unauthenticated,
    /// The TLS handshake refused the certificate: no call got through.
    NoConnection,
}

/// The callers of the table, in column order.
const CALLERS: [&str; 5] = ["manager", "worker", "removed", "other CA", "none"];

/// The expected answers: one row per RPC, one column per caller (see [`CALLERS`]).
fn expected(rpc: &str) -> [Answer; 5] {
    use Answer::*;
    // Another CA's certificate fails verification; a removed node's is on the revocation list
    // the managers keep in Raft: neither finishes the TLS handshake.
    let x = NoConnection;
    match rpc {
        // Only the node's root, on its unix socket.
        "Init" | "JoinSwarm" | "Leave" => [Denied, Denied, x, x, Unauthenticated],
        // The token is the credential.
        "Admit" => [Served, Served, x, x, Served],
        // Managers only.
        "AddRaftMember" | "JoinToken" | "ListNodes" | "UpdateNode" | "RemoveNode"
        | "CreateService" | "UpdateService" | "RemoveService" | "ListServices" | "ListTasks"
        | "TaskLogs" | "Events" | "Exec" | "CreateNetwork" | "RemoveNetwork"
        | "RotateGossipKey" | "UnlockKey" | "Raft" | "UpdateSwarm" | "InspectSwarm" | "RootCa" => {
            [Served, Denied, x, x, Unauthenticated]
        }
        // Managers only: no node reads a secret (or a config) through the API; a node gets the
        // data of its own tasks' files with its heartbeat answer, and nothing else.
        "CreateSecret" | "ListSecrets" | "InspectSecret" | "UpdateSecret" | "RemoveSecret"
        | "CreateConfig" | "ListConfigs" | "InspectConfig" | "UpdateConfig" | "RemoveConfig" => {
            [Served, Denied, x, x, Unauthenticated]
        }
        // A node for itself (or a manager relaying).
        "Heartbeat" | "RenewCertificate" => [Served, Served, x, x, Unauthenticated],
        // Any member.
        "ListNetworks" => [Served, Served, x, x, Unauthenticated],
        other => panic!("RPC {other} has no row in the authorization table"),
    }
}

/// Calls `rpc` as the holder of `node_id`'s certificate would, with requests that are harmless
/// when served (about the caller itself, or about nothing that exists).
async fn call(client: &mut ClusterClient<Channel>, rpc: &str, node_id: &str) -> Answer {
    let me = node_id.to_string();
    let result = match rpc {
        "Init" => client.init(InitRequest::default()).await.map(drop),
        "JoinSwarm" => client
            .join_swarm(JoinSwarmRequest::default())
            .await
            .map(drop),
        "Leave" => client.leave(LeaveRequest::default()).await.map(drop),
        "Admit" => client
            .admit(AdmitRequest {
                token: "SWMTKN-1-bogus".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "AddRaftMember" => client
            .add_raft_member(AddRaftMemberRequest::default())
            .await
            .map(drop),
        "JoinToken" => client
            .join_token(JoinTokenRequest {
                role: "nobody".into(),
                rotate: false,
            })
            .await
            .map(drop),
        "ListNodes" => client.list_nodes(Empty {}).await.map(drop),
        "UpdateNode" => client
            .update_node(UpdateNodeRequest {
                node: "nosuchnode".into(),
                availability: "drain".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "RemoveNode" => client
            .remove_node(RemoveNodeRequest {
                node: "nosuchnode".into(),
                force: true,
            })
            .await
            .map(drop),
        "Heartbeat" => client
            .heartbeat(HeartbeatRequest {
                node_id: me,
                task_reports: Vec::new(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Raft" => client
            .raft(RaftRequest {
                kind: "nonsense".into(),
                payload: Vec::new(),
            })
            .await
            .map(drop),
        "CreateService" => client
            .create_service(ServiceSpec::default())
            .await
            .map(drop),
        "UpdateService" => client
            .update_service(UpdateServiceRequest {
                service: "nosuchservice".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "RemoveService" => client
            .remove_service(ServiceRef {
                service: "nosuchservice".into(),
            })
            .await
            .map(drop),
        "ListServices" => client.list_services(Empty {}).await.map(drop),
        "ListTasks" => client
            .list_tasks(ListTasksRequest {
                service: "nosuchservice".into(),
                node: String::new(),
            })
            .await
            .map(drop),
        "TaskLogs" => client
            .task_logs(TaskLogsRequest {
                task_id: "nosuchtask".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Events" => client.events(EventsRequest::default()).await.map(drop),
        "Exec" => client
            .exec(ExecRequest {
                task: "nosuchtask".into(),
                command: vec!["true".into()],
            })
            .await
            .map(drop),
        "CreateNetwork" => client
            .create_network(NetworkSpec::default())
            .await
            .map(drop),
        "RemoveNetwork" => client
            .remove_network(NetworkRef {
                network: "nosuchnetwork".into(),
            })
            .await
            .map(drop),
        "ListNetworks" => client.list_networks(Empty {}).await.map(drop),
        "RotateGossipKey" => client.rotate_gossip_key(Empty {}).await.map(drop),
        "RenewCertificate" => client
            .renew_certificate(RenewCertificateRequest { node_id: me })
            .await
            .map(drop),
        "UnlockKey" => client
            .unlock_key(UnlockKeyRequest {
                autolock: None,
                rotate: false,
            })
            .await
            .map(drop),
        // Changes nothing: no setting given.
        "UpdateSwarm" => client
            .update_swarm(UpdateSwarmRequest::default())
            .await
            .map(drop),
        // Reads only.
        "InspectSwarm" => client.inspect_swarm(Empty {}).await.map(drop),
        // Shows the root; no rotation.
        "RootCa" => client
            .root_ca(RootCaRequest { rotate: false })
            .await
            .map(drop),
        // An empty spec is refused for its name (nothing is created); references name nothing.
        "CreateSecret" => client.create_secret(SecretSpec::default()).await.map(drop),
        "ListSecrets" => client.list_secrets(Empty {}).await.map(drop),
        "InspectSecret" => client.inspect_secret(nothing()).await.map(drop),
        "UpdateSecret" => client.update_secret(no_update()).await.map(drop),
        "RemoveSecret" => client.remove_secret(nothing()).await.map(drop),
        "CreateConfig" => client.create_config(ConfigSpec::default()).await.map(drop),
        "ListConfigs" => client.list_configs(Empty {}).await.map(drop),
        "InspectConfig" => client.inspect_config(nothing()).await.map(drop),
        "UpdateConfig" => client.update_config(no_update()).await.map(drop),
        "RemoveConfig" => client.remove_config(nothing()).await.map(drop),
        other => panic!("RPC {other} has no call in this test"),
    };
    match result {
        Ok(()) => Answer::Served,
        Err(status) => match status.code() {
            Code::PermissionDenied if !is_business_refusal(rpc, &status) => Answer::Denied,
            Code::Unauthenticated => Answer::Unauthenticated,
            // The connection itself failed (in TLS 1.3 a refused client certificate is known
            // only after the client's side of the handshake is done).
            Code::Unavailable | Code::Unknown | Code::Cancelled
                if is_transport_failure(&status) =>
            {
                Answer::NoConnection
            }
            _ => Answer::Served,
        },
    }
}

/// New labels for a secret or config that does not exist.
fn no_update() -> UpdateObjectRequest {
    UpdateObjectRequest {
        reference: "nosuchobject".into(),
        ..Default::default()
    }
}

/// A secret or config that does not exist.
fn nothing() -> ObjectRef {
    ObjectRef {
        reference: "nosuchobject".into(),
    }
}

fn is_transport_failure(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        cause = e.source();
    }
    let message = status.message().to_lowercase();
    ["transport", "connection", "tls", "certificate", "handshake"]
        .iter()
        .any(|word| message.contains(word))
}

/// A refusal by the operation itself, not by authorization: the join call refuses a bogus
/// token with `PermissionDenied` too.
fn is_business_refusal(rpc: &str, status: &tonic::Status) -> bool {
    rpc == "Admit" && status.message().contains("join token")
}

/// The `Cluster` service's RPCs, as the API defines them.
fn cluster_rpcs() -> Vec<String> {
    let proto = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../control/proto/shoal.proto"),
    )
    .unwrap();
    let service = proto
        .split("service Cluster {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("service Cluster in shoal.proto");
    let rpcs: Vec<String> = service
        .lines()
        .filter_map(|line| line.trim().strip_prefix("rpc "))
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_string())
        .collect();
    assert!(rpcs.len() >= 20, "parsed {rpcs:?}");
    rpcs
}

pub(crate) fn tls_with(ca_pem: &str, identity: Option<(String, String)>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("shoal-node");
    match identity {
        Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
        None => tls,
    }
}

/// A node's credentials, as its agent keeps them.
pub(crate) fn node_identity(cluster: &Cluster, i: usize) -> (String, String) {
    let dir = cluster.nodes[i].state_dir().join("swarm/tls");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read("node.pem"), read("node-key.pem"))
}

#[test]
fn every_rpc_answers_each_kind_of_caller_as_the_table_says() {
    let mut cluster = Cluster::start(3);
    cluster.form_swarm(1);
    let ids: Vec<String> = (0..3).map(|i| cluster.nodes[i].node_id()).collect();
    let ca_pem =
        std::fs::read_to_string(cluster.nodes[0].state_dir().join("swarm/tls/ca.pem")).unwrap();

    // --- 1. node3 is removed: its agent dies, the manager removes it; its certificate stays.
    // A connection it opened before is refused from the next call on.
    let removed = node_identity(&cluster, 2);
    cluster.nodes[2].kill();
    let addr = cluster.nodes[0].address;
    let (before, after) = run_in(Path::new(&cluster.client.path()), || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let channel = Endpoint::from_shared(format!("https://{addr}:2377"))
                .unwrap()
                // Nodes name their API version on 2377; a caller naming none is refused.
                .user_agent(shoal_control::version::user_agent())
                .unwrap()
                .tls_config(tls_with(&ca_pem, Some(removed.clone())))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = ClusterClient::new(channel);
            let before = call(&mut client, "ListNetworks", &ids[2]).await;
            let out = cluster.nodes[0].cli(&["node", "rm", "--force", "node3"]);
            assert!(out.status.success(), "{out:?}");
            (before, call(&mut client, "ListNetworks", &ids[2]).await)
        })
    })
    .unwrap();
    assert_eq!(before, Answer::Served);
    assert_eq!(after, Answer::Unauthenticated);

    // --- 2. another swarm's CA, with a manager certificate for one of our node IDs
    let other = ClusterCa::generate("other").unwrap();
    let forged = other.issue(&ids[0], Role::Manager, "other").unwrap();

    let callers: [(ClientTlsConfig, &str); 5] = [
        (tls_with(&ca_pem, Some(node_identity(&cluster, 0))), &ids[0]),
        (tls_with(&ca_pem, Some(node_identity(&cluster, 1))), &ids[1]),
        (tls_with(&ca_pem, Some(removed)), &ids[2]),
        (
            tls_with(&ca_pem, Some((forged.cert_pem, forged.key_pem))),
            &ids[0],
        ),
        (tls_with(&ca_pem, None), ""),
    ];
    let rpcs = cluster_rpcs();
    let got: BTreeMap<String, Vec<Answer>> = run_in(Path::new(&cluster.client.path()), || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut got = BTreeMap::new();
            for rpc in &rpcs {
                let mut row = Vec::new();
                for (tls, node_id) in &callers {
                    let endpoint = Endpoint::from_shared(format!("https://{addr}:2377"))
                        .unwrap()
                        // Nodes name their API version on 2377; a caller naming none is refused.
                        .user_agent(shoal_control::version::user_agent())
                        .unwrap()
                        .tls_config(tls.clone())
                        .unwrap()
                        .timeout(Duration::from_secs(5));
                    let answer = match endpoint.connect().await {
                        Ok(channel) => call(&mut ClusterClient::new(channel), rpc, node_id).await,
                        Err(_) => Answer::NoConnection,
                    };
                    row.push(answer);
                }
                got.insert(rpc.clone(), row);
            }
            got
        })
    })
    .unwrap();

    // --- 3. every cell as the table says
    let mut wrong = Vec::new();
    for (rpc, row) in &got {
        for ((caller, answer), want) in CALLERS.iter().zip(row).zip(expected(rpc)) {
            if *answer != want {
                wrong.push(format!("{rpc} as {caller}: {answer:?}, expected {want:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_join_carrying_another_nodes_id_is_refused_and_that_node_keeps_its_place() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    let manager_id = cluster.nodes[0].node_id();
    let token: JoinToken = cluster.join_token(0, "worker").parse().unwrap();
    let addr = cluster.nodes[0].address;

    // --- 1. the holder of the worker token asks to be the manager
    let status = run_in(Path::new(&cluster.client.path()), || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (channel, _) = connect_for_join((addr, 2377).into(), &token).await.unwrap();
            ClusterClient::new(channel)
                .admit(AdmitRequest {
                    token: token.to_string(),
                    node_id: manager_id.clone(),
                    hostname: "impostor".into(),
                    addr: format!("{}:2377", Ipv4Addr::new(192, 0, 2, 66)),
                    data_path_addr: "192.0.2.66".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err()
        })
    })
    .unwrap();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("already a member"), "{status:?}");

    // --- 2. the manager is still itself: a Ready leader at its own address
    let nodes = cluster.node_ls(0).unwrap();
    let manager = nodes
        .iter()
        .find(|n| n["id"] == manager_id.as_str())
        .unwrap();
    assert_eq!(manager["hostname"], "node1", "{manager}");
    assert_eq!(manager["role"], "manager", "{manager}");
    assert_eq!(manager["manager_status"], "leader", "{manager}");
    assert_eq!(
        manager["addr"],
        format!("{}:2377", cluster.nodes[0].address),
        "{manager}"
    );
    assert_eq!(nodes.len(), 2, "no node was added: {nodes:?}");
    wait_until(Duration::from_secs(5), "the manager stays Ready", || {
        let nodes = cluster.node_ls(0)?;
        let m = nodes
            .iter()
            .find(|n| n["id"] == manager_id.as_str())
            .unwrap();
        if m["status"] == "ready" {
            Ok(())
        } else {
            Err(format!("{m}"))
        }
    });
}

#[test]
fn strangers_on_2377_are_bounded_per_source_and_members_carry_on() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    let addr = cluster.nodes[0].address;

    // --- 1. one source opens 100 connections and never says a word: past its share, they
    // are closed at once
    let (closed, held) = run_in(Path::new(&cluster.client.path()), || {
        let streams: Vec<std::net::TcpStream> = (0..100)
            .map(|_| std::net::TcpStream::connect((addr, 2377)).unwrap())
            .collect();
        let mut closed = 0;
        for stream in &streams {
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            if refused(stream) {
                closed += 1;
            }
        }
        (closed, streams)
    })
    .unwrap();
    assert!(
        closed >= 60,
        "only {closed} of 100 idle connections were refused"
    );

    // --- 2. while those are held, the worker still heartbeats and the manager answers
    wait_until(Duration::from_secs(5), "node2 Ready", || {
        let nodes = cluster.node_ls(0)?;
        let n2 = nodes.iter().find(|n| n["hostname"] == "node2").unwrap();
        if n2["status"] == "ready" {
            Ok(())
        } else {
            Err(format!("{n2}"))
        }
    });
    drop(held);

    // --- 3. join attempts from one source: a burst, then refused until it waits
    let token = format!("SWMTKN-1-{}-{}", "0".repeat(50), "a".repeat(25));
    let token: JoinToken = token.parse().unwrap();
    let codes = run_in(Path::new(&cluster.client.path()), || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let endpoint = Endpoint::from_shared(format!("https://{addr}:2377"))
                .unwrap()
                // Nodes name their API version on 2377; a caller naming none is refused.
                .user_agent(shoal_control::version::user_agent())
                .unwrap()
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(
                            std::fs::read_to_string(
                                cluster.nodes[0].state_dir().join("swarm/tls/ca.pem"),
                            )
                            .unwrap(),
                        ))
                        .domain_name("shoal-node"),
                )
                .unwrap();
            let mut client = ClusterClient::new(endpoint.connect().await.unwrap());
            let mut codes = Vec::new();
            for _ in 0..30 {
                let status = client
                    .admit(AdmitRequest {
                        token: token.to_string(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                codes.push(status.code());
            }
            codes
        })
    })
    .unwrap();
    let refused = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    assert!(
        refused >= 15,
        "30 quick join attempts, {refused} refused for their rate: {codes:?}"
    );
    assert_eq!(
        codes[0],
        Code::PermissionDenied,
        "the first is judged: {codes:?}"
    );
}

/// Whether the server closed `stream` (EOF or a reset) rather than holding it open (the
/// read times out).
fn refused(stream: &std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match std::io::Read::read(&mut &*stream, &mut byte) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}
