//! TLS configuration for the 2377 gRPC API, the client side (the server's is `tls_server`):
//! the configuration of nodes that hold credentials, the connection every client makes, and
//! the connection a joining node makes before it has credentials, which trusts the manager
//! only if it proves it belongs to the CA pinned by the join token.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::{
    codegen::http::Uri,
    transport::{Channel, Endpoint},
};

use super::{JoinToken, NodeCredentials, PkiError, ca::digest_of_der, pem};

/// The name every node's certificate carries and every client asks for (SNI and verification):
/// nodes are dialled by IP address, so their certificates cannot name the address.
pub const TLS_SERVER_NAME: &str = "shoal-node";

/// gRPC runs over HTTP/2 only.
pub(super) const ALPN_H2: &[u8] = b"h2";
/// Bounds a TLS handshake, so a silent peer cannot hold a connection slot (server) or a join
/// (client) forever.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration of a node's connections to other nodes: trust only the swarm's roots
/// (one, or two during a root rotation), present the node certificate (with its intermediate,
/// the cross-signed CA, during a rotation), expect the name [`TLS_SERVER_NAME`], speak h2.
/// [`super::LiveTls`] builds one per set of credentials.
pub fn client_config(creds: &NodeCredentials) -> Result<Arc<ClientConfig>, PkiError> {
    let tls = |source| PkiError::Tls { source };
    let mut roots = RootCertStore::empty();
    for root in pem::certs_der(&creds.ca_cert_pem, "the CA certificates")? {
        roots.add(root).map_err(tls)?;
    }
    let chain = pem::certs_der(&creds.cert_pem, "the node certificate")?;
    let key = pem::key_der(&creds.key_pem, "the node key")?;
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// TCP to `addr`, then a TLS handshake with `config` for [`TLS_SERVER_NAME`], bounded by
/// [`HANDSHAKE_TIMEOUT`], which must agree on h2: what tonic gets from the connectors of
/// [`connect_for_join`] and [`super::LiveTls::channel`].
pub(super) async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let server_name = ServerName::try_from(TLS_SERVER_NAME)
        .map_err(|e| io::Error::other(format!("{TLS_SERVER_NAME}: {e}")))?;
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
        return Err(io::Error::other(
            "the peer did not negotiate HTTP/2 (ALPN h2)",
        ));
    }
    Ok(TokioIo::new(tls))
}

/// Connects to the manager at `addr` for the Join call, before the node has credentials,
/// without trusting on first use.
///
/// The TLS client presents no certificate and accepts the server only if the chain it sends
/// holds a certificate whose digest is the token's CA digest, AND the server's certificate is
/// validly signed by that CA for the name [`TLS_SERVER_NAME`] (webpki, with that CA as the
/// only root). Every (re)connection of the returned channel is checked the same way.
///
/// Returns the channel and the verified CA certificate, PEM, for the node to keep.
pub async fn connect_for_join(
    addr: SocketAddr,
    token: &JoinToken,
) -> Result<(Channel, String), PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(JoinVerifier {
        expected_digest: token.ca_digest.clone(),
        provider: Arc::clone(&provider),
        seen: Mutex::default(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| PkiError::Tls { source })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    let config = Arc::new(config);

    // tonic sees a plain `http://` endpoint; this connector does TCP and TLS itself, with the
    // pinned-CA verifier (tonic's `ClientTlsConfig` verifies against fixed roots only).
    let connect = tower::service_fn(move |_: Uri| tls_connect(addr, Arc::clone(&config)));
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(crate::version::user_agent()))
        .map_err(|source| PkiError::Connect { addr, source })?
        .connect_timeout(HANDSHAKE_TIMEOUT);
    let result = endpoint.connect_with_connector(connect).await;
    let seen = verifier.seen();
    match result {
        Ok(channel) => match seen.verified_ca {
            Some(ca) => Ok((channel, pem::encode_cert(&ca))),
            // Cannot happen (a fresh config has no session to resume, so the verifier ran),
            // but never hand out a channel whose CA was not checked.
            None => Err(PkiError::Tls {
                source: rustls::Error::General("connected without verifying the CA".into()),
            }),
        },
        Err(source) => match seen.mismatch {
            Some(found) => Err(PkiError::CaMismatch {
                addr,
                expected: token.ca_digest.clone(),
                found,
            }),
            None => Err(PkiError::Connect { addr, source }),
        },
    }
}

/// What the join verifier saw during the last handshake.
#[derive(Debug, Default)]
struct Seen {
    /// The CA the server certificate was verified against.
    verified_ca: Option<CertificateDer<'static>>,
    /// The digests of the chain the server sent, when none matched the token.
    mismatch: Option<Vec<String>>,
}

/// A server-certificate verifier that trusts only the CA pinned by a join token's digest.
#[derive(Debug)]
struct JoinVerifier {
    expected_digest: String,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Seen>,
}

impl JoinVerifier {
    fn seen(&self) -> Seen {
        // A panic while holding this lock cannot leave `Seen` half-updated (one assignment).
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn record(&self, update: impl FnOnce(&mut Seen)) {
        update(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

impl ServerCertVerifier for JoinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The digest pins the exact CA certificate; the leaf is not a candidate (a CA never
        // serves as its own node certificate).
        let Some(ca) = intermediates
            .iter()
            .find(|c| digest_of_der(c.as_ref()) == self.expected_digest)
        else {
            let found = intermediates
                .iter()
                .map(|c| digest_of_der(c.as_ref()))
                .collect();
            self.record(|s| s.mismatch = Some(found));
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("join verifier: {e}")))?;
        // The pinned CA is the only root. The rest of the chain may lead to it: during a root
        // rotation the manager's certificate is from the new CA, which the pinned (old) one
        // cross-signed; only the pinned CA's key can have made such a link.
        let others: Vec<CertificateDer<'_>> =
            intermediates.iter().filter(|c| *c != ca).cloned().collect();
        webpki.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)?;
        let ca = ca.clone().into_owned();
        self.record(|s| s.verified_ca = Some(ca));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    //! End-to-end over loopback with a real tonic server (TLS by `tls_server`, as the 2377
    //! server does it) and real tonic channels. The server is a raw `tower::Service` rather than a generated
    //! gRPC service: it answers every request with the identity it read from the client's
    //! certificate in a response header, which is all these tests need to see.

    use std::{
        convert::Infallible,
        future::{Ready, ready},
        task::{Context, Poll},
    };

    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{
        body::Body,
        codegen::{Service, http},
        server::NamedService,
        transport::{
            Server,
            server::{TcpConnectInfo, TlsConnectInfo},
        },
    };
    use tower::ServiceExt;

    use super::*;
    use crate::{
        cluster::Role,
        pki::{
            ClusterCa, LiveTls, peer_identity,
            tls_server::{NoRevocations, Revocations, handshakes, server_config},
        },
    };

    const PEER_HEADER: &str = "x-shoal-peer";

    #[derive(Clone)]
    struct WhoAmI;

    impl NamedService for WhoAmI {
        const NAME: &'static str = "shoal.test.WhoAmI";
    }

    impl Service<http::Request<Body>> for WhoAmI {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            // What `tonic::Request::peer_certs` reads.
            let certs = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.peer_certs());
            let who = match certs.as_ref().and_then(|c| c.first()) {
                None => "anonymous".to_string(),
                Some(der) => match peer_identity(der.as_ref()) {
                    Ok(id) => format!("{}/{:?}", id.node_id, id.role),
                    Err(e) => format!("unreadable: {e}"),
                },
            };
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "0")
                .header(PEER_HEADER, who)
                .body(Body::empty())
                .unwrap();
            ready(Ok(response))
        }
    }

    async fn start_server(creds: &NodeCredentials) -> SocketAddr {
        start_server_revoking(creds, Arc::new(NoRevocations)).await
    }

    async fn start_server_revoking(
        creds: &NodeCredentials,
        revocations: Arc<dyn Revocations>,
    ) -> SocketAddr {
        let live = LiveTls::new(creds.clone()).unwrap();
        live.set_revocations(revocations);
        start_live_server(live).await
    }

    async fn start_live_server(live: Arc<LiveTls>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = handshakes(TcpListenerStream::new(listener), live);
        let router = Server::builder().add_service(WhoAmI);
        tokio::spawn(router.serve_with_incoming(incoming));
        addr
    }

    /// Refuses the node IDs it holds.
    #[derive(Debug)]
    struct Removed(&'static [&'static str]);

    impl Revocations for Removed {
        fn is_revoked(&self, node_id: &str) -> bool {
            self.0.contains(&node_id)
        }
    }

    /// One request on `channel`; the identity the server saw.
    async fn who_am_i(channel: Channel) -> Result<String, tonic::transport::Error> {
        let request = http::Request::builder()
            .method("POST")
            .uri("/shoal.test.WhoAmI/Get")
            .header("content-type", "application/grpc")
            .body(Body::empty())
            .unwrap();
        let response = channel.oneshot(request).await?;
        Ok(response
            .headers()
            .get(PEER_HEADER)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string())
    }

    /// A channel with `creds`. It connects lazily: a refused handshake shows on the first
    /// call.
    async fn connect(addr: SocketAddr, creds: &NodeCredentials) -> Result<Channel, PkiError> {
        let live = LiveTls::new(creds.clone())?;
        live.channel(addr, Duration::from_secs(5), Duration::from_secs(5))
    }

    struct Cluster {
        ca: ClusterCa,
        manager: NodeCredentials,
        worker: NodeCredentials,
    }

    fn cluster(id: &str) -> Cluster {
        let ca = ClusterCa::generate(id).unwrap();
        let manager = ca.issue("manager1", Role::Manager, id).unwrap();
        let worker = ca.issue("worker1", Role::Worker, id).unwrap();
        Cluster {
            ca,
            manager,
            worker,
        }
    }

    fn token_for(ca: &ClusterCa) -> JoinToken {
        JoinToken::new(ca.digest().unwrap(), crate::pki::generate_secret())
    }

    #[tokio::test]
    async fn node_of_the_cluster_is_identified_by_its_certificate() {
        let c = cluster("c1");
        let addr = start_server(&c.manager).await;
        let channel = connect(addr, &c.worker).await.unwrap();
        assert_eq!(who_am_i(channel).await.unwrap(), "worker1/Worker");
    }

    #[tokio::test]
    async fn join_with_the_right_digest_connects_anonymously_and_returns_the_ca() {
        let c = cluster("c1");
        let addr = start_server(&c.manager).await;
        let (channel, ca_pem) = connect_for_join(addr, &token_for(&c.ca)).await.unwrap();
        assert_eq!(ca_pem, c.ca.cert_pem);
        assert_eq!(who_am_i(channel).await.unwrap(), "anonymous");
    }

    #[tokio::test]
    async fn join_with_another_cas_digest_fails() {
        let c = cluster("c1");
        let other = ClusterCa::generate("c2").unwrap();
        let addr = start_server(&c.manager).await;
        let err = connect_for_join(addr, &token_for(&other))
            .await
            .unwrap_err();
        match err {
            PkiError::CaMismatch {
                expected, found, ..
            } => {
                assert_eq!(expected, other.digest().unwrap());
                assert_eq!(found, [c.ca.digest().unwrap()]);
            }
            other => panic!("expected CaMismatch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn join_rejects_a_server_that_shows_the_ca_without_a_certificate_from_it() {
        // A man in the middle can copy the (public) CA certificate into its chain, but cannot
        // have its own certificate signed by it.
        let c = cluster("c1");
        let impostor_ca = ClusterCa::generate("c1").unwrap();
        let mut impostor = impostor_ca.issue("manager1", Role::Manager, "c1").unwrap();
        impostor.ca_cert_pem = c.ca.cert_pem.clone();
        let addr = start_server(&impostor).await;
        let err = connect_for_join(addr, &token_for(&c.ca)).await.unwrap_err();
        assert!(matches!(err, PkiError::Connect { .. }), "{err:?}");
        assert!(
            crate::error_chain::chain(&err).contains("BadSignature"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn client_certificate_from_another_ca_is_rejected() {
        let c = cluster("c1");
        let addr = start_server(&c.manager).await;
        // Trusts the right CA (so the client accepts the server), but presents a certificate
        // of another CA: the server must refuse it. With TLS 1.3 the server's verdict arrives
        // after the client's handshake, so the failure may show on the first request.
        let foreign = ClusterCa::generate("c2")
            .unwrap()
            .issue("intruder", Role::Manager, "c2")
            .unwrap();
        let creds = NodeCredentials {
            ca_cert_pem: c.ca.cert_pem.clone(),
            ..foreign
        };
        let result = match connect(addr, &creds).await {
            Ok(channel) => who_am_i(channel)
                .await
                .map_err(|e| crate::error_chain::chain(&e)),
            Err(e) => Err(crate::error_chain::chain(&e)),
        };
        let err = result.unwrap_err();
        assert!(err.contains("UnknownCA"), "{err}");
    }

    #[tokio::test]
    async fn certificate_of_a_removed_node_is_refused_at_the_handshake() {
        let c = cluster("c1");
        let addr = start_server_revoking(&c.manager, Arc::new(Removed(&["worker1"]))).await;
        // The certificate is validly signed by the CA; only the revocation list stops it.
        let result = match connect(addr, &c.worker).await {
            Ok(channel) => who_am_i(channel)
                .await
                .map_err(|e| crate::error_chain::chain(&e)),
            Err(e) => Err(crate::error_chain::chain(&e)),
        };
        let err = result.unwrap_err();
        assert!(err.contains("Revoked"), "{err}");
        // Others still get in, and so does a node without a certificate (joining).
        let manager = connect(addr, &c.manager).await.unwrap();
        assert_eq!(who_am_i(manager).await.unwrap(), "manager1/Manager");
        let (joining, _) = connect_for_join(addr, &token_for(&c.ca)).await.unwrap();
        assert_eq!(who_am_i(joining).await.unwrap(), "anonymous");
    }

    #[tokio::test]
    async fn a_silent_client_does_not_hold_up_the_next_handshake() {
        let c = cluster("c1");
        let addr = start_server(&c.manager).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        // Handshakes one after the other would keep this one waiting for the silent one's
        // timeout (10 s).
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            let channel = connect(addr, &c.worker).await.unwrap();
            who_am_i(channel).await.unwrap()
        })
        .await
        .expect("a handshake waited for another client's");
        assert_eq!(answered, "worker1/Worker");
    }

    #[tokio::test]
    async fn node_of_another_cluster_rejects_the_server() {
        let c = cluster("c1");
        let other = cluster("c2");
        let addr = start_server(&c.manager).await;
        let err = who(addr, &other.worker).await.unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }

    /// A root rotation half-way: the new CA, cross-signed by the old one.
    struct Rotation {
        old: ClusterCa,
        new: ClusterCa,
        cross: String,
    }

    impl Rotation {
        fn start() -> Rotation {
            let old = ClusterCa::generate("c1").unwrap();
            let (new, cross) = old.successor("c1").unwrap();
            Rotation { old, new, cross }
        }

        /// A certificate of the old CA, trusting `trust`.
        fn old_cert(&self, node: &str, role: Role, trust: &str) -> NodeCredentials {
            NodeCredentials {
                ca_cert_pem: trust.to_string(),
                ..self.old.issue(node, role, "c1").unwrap()
            }
        }

        /// A certificate of the new CA with the cross-signed one after it, trusting `trust`.
        fn new_cert(&self, node: &str, role: Role, trust: &str) -> NodeCredentials {
            let creds = self.new.issue(node, role, "c1").unwrap();
            NodeCredentials {
                ca_cert_pem: trust.to_string(),
                cert_pem: format!("{}{}", creds.cert_pem, self.cross),
                key_pem: creds.key_pem,
            }
        }

        fn both(&self) -> String {
            format!("{}{}", self.old.cert_pem, self.new.cert_pem)
        }
    }

    /// Who the server at `addr` says `creds` are, or why the call failed.
    async fn who(addr: SocketAddr, creds: &NodeCredentials) -> Result<String, String> {
        match connect(addr, creds).await {
            Ok(channel) => who_am_i(channel)
                .await
                .map_err(|e| crate::error_chain::chain(&e)),
            Err(e) => Err(crate::error_chain::chain(&e)),
        }
    }

    #[tokio::test]
    async fn new_connections_take_the_renewed_certificate_and_open_ones_keep_theirs() {
        let c = cluster("c1");
        let server = LiveTls::new(c.manager.clone()).unwrap();
        let addr = start_live_server(Arc::clone(&server)).await;
        let client = LiveTls::new(c.worker.clone()).unwrap();
        let before = client
            .channel(addr, Duration::from_secs(5), Duration::from_secs(5))
            .unwrap();
        assert_eq!(who_am_i(before.clone()).await.unwrap(), "worker1/Worker");
        // Both sides renew (the client with another role, so the server's view shows it).
        client
            .replace(c.ca.issue("worker1", Role::Manager, "c1").unwrap())
            .unwrap();
        server
            .replace(c.ca.issue("manager1", Role::Manager, "c1").unwrap())
            .unwrap();
        let after = client
            .channel(addr, Duration::from_secs(5), Duration::from_secs(5))
            .unwrap();
        assert_eq!(who_am_i(after).await.unwrap(), "worker1/Manager");
        assert_eq!(who_am_i(before).await.unwrap(), "worker1/Worker");
    }

    #[tokio::test]
    async fn during_a_root_rotation_old_and_new_certificates_meet() {
        let r = Rotation::start();
        let (old_root, both) = (r.old.cert_pem.clone(), r.both());
        // A manager already moved to the new CA; nodes that trust only the old root, or both.
        let addr = start_server(&r.new_cert("manager1", Role::Manager, &both)).await;
        for (case, creds) in [
            (
                "old cert, old trust",
                r.old_cert("w1", Role::Worker, &old_root),
            ),
            ("old cert, both", r.old_cert("w2", Role::Worker, &both)),
            (
                "new cert, old trust",
                r.new_cert("w3", Role::Worker, &old_root),
            ),
            ("new cert, both", r.new_cert("w4", Role::Worker, &both)),
        ] {
            let seen = who(addr, &creds).await;
            assert!(
                seen.as_deref().is_ok_and(|s| s.ends_with("/Worker")),
                "{case}: {seen:?}"
            );
        }
        // A manager still on the old CA that does not know of the rotation yet takes the
        // moved nodes, through the cross-signed certificate.
        let addr = start_server(&r.old_cert("manager2", Role::Manager, &old_root)).await;
        let moved = r.new_cert("w5", Role::Worker, &both);
        assert_eq!(who(addr, &moved).await.unwrap(), "w5/Worker");
    }

    #[tokio::test]
    async fn after_a_root_rotation_the_old_roots_certificates_are_refused() {
        let r = Rotation::start();
        let new_root = r.new.cert_pem.clone();
        let addr = start_server(&r.new.issue("manager1", Role::Manager, "c1").unwrap()).await;
        // Moved during the rotation (still carrying the cross-signed certificate) or after.
        let during = r.new_cert("w1", Role::Worker, &new_root);
        assert_eq!(who(addr, &during).await.unwrap(), "w1/Worker");
        let after = r.new.issue("w2", Role::Worker, "c1").unwrap();
        assert_eq!(who(addr, &after).await.unwrap(), "w2/Worker");
        // Never moved. Both CAs have the same name: the server tries the new root's key on it
        // (a bad signature, which TLS 1.3 reports as a decrypt error).
        let stale = r.old_cert("w3", Role::Worker, &r.both());
        let err = who(addr, &stale).await.unwrap_err();
        assert!(
            err.contains("DecryptError") || err.contains("UnknownCA"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn joining_during_a_rotation_works_with_the_token_of_either_root() {
        let r = Rotation::start();
        let addr = start_server(&r.new_cert("manager1", Role::Manager, &r.both())).await;
        let (_, ca) = connect_for_join(addr, &token_for(&r.old)).await.unwrap();
        assert_eq!(ca, r.old.cert_pem);
        let (_, ca) = connect_for_join(addr, &token_for(&r.new)).await.unwrap();
        assert_eq!(ca, r.new.cert_pem);
    }

    #[test]
    fn bad_pem_is_reported_before_tonic_sees_it() {
        let c = cluster("c1");
        let broken = NodeCredentials {
            key_pem: "nope".into(),
            ..c.worker
        };
        assert!(matches!(
            server_config(&broken, Arc::new(NoRevocations)),
            Err(PkiError::Pem {
                what: "the node key",
                ..
            })
        ));
        assert!(client_config(&broken).is_err());
        assert!(LiveTls::new(broken).is_err());
    }
}
