//! TLS configuration for the 2377 gRPC API, the client side (the server's is `tls_server`):
//! the configuration of nodes that hold credentials, and the connection a joining node makes
//! before it has any, which trusts the manager only if it proves it belongs to the CA pinned by
//! the join token.

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
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
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

/// The TLS configuration of a node's connections to managers: trust only the cluster CA,
/// present the node certificate, expect the name [`TLS_SERVER_NAME`]. Use with an `https://`
/// endpoint.
pub fn client_tls(creds: &NodeCredentials) -> Result<ClientTlsConfig, PkiError> {
    check(creds)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&creds.ca_cert_pem))
        .identity(Identity::from_pem(&creds.cert_pem, &creds.key_pem))
        .domain_name(TLS_SERVER_NAME)
        .timeout(HANDSHAKE_TIMEOUT))
}

/// tonic parses the PEM only when the server starts or the channel connects, with errors that
/// do not say which part was wrong: parse it here first.
fn check(creds: &NodeCredentials) -> Result<(), PkiError> {
    pem::cert_der(&creds.ca_cert_pem, "the CA certificate")?;
    pem::cert_der(&creds.cert_pem, "the node certificate")?;
    pem::key_der(&creds.key_pem, "the node key")?;
    Ok(())
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
    let connector = TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(TLS_SERVER_NAME).map_err(|e| PkiError::Tls {
        source: rustls::Error::General(format!("{TLS_SERVER_NAME}: {e}")),
    })?;

    // tonic sees a plain `http://` endpoint; this connector does TCP and TLS itself, with the
    // pinned-CA verifier (tonic's `ClientTlsConfig` verifies against fixed roots only).
    let connect = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(server_name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(io::Error::other(
                    "the manager did not negotiate HTTP/2 (ALPN h2)",
                ));
            }
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
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
        // No intermediates: the node certificate must be signed by the CA itself.
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
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
            ClusterCa, peer_identity,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = server_config(creds, revocations).unwrap();
        let incoming = handshakes(TcpListenerStream::new(listener), config);
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

    async fn connect(addr: SocketAddr, creds: &NodeCredentials) -> Result<Channel, PkiError> {
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(client_tls(creds)?)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|source| PkiError::Connect { addr, source })
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
        let err = connect(addr, &other.worker).await.unwrap_err();
        assert!(
            crate::error_chain::chain(&err).contains("UnknownIssuer"),
            "{err:?}"
        );
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
        assert!(client_tls(&broken).is_err());
    }
}
