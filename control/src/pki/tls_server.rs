//! The 2377 server's side of TLS: its configuration, and the handshakes of the connections it
//! accepts.
//!
//! shoal runs the handshakes itself rather than through tonic's `ServerTlsConfig`, so the
//! client-certificate check can ask the swarm one more question: was this node removed? A
//! removed node's certificate is still validly signed by the CA until it expires; the
//! verifier refuses it before the handshake completes (a revocation list kept in Raft, see
//! [`Revocations`]), and authorization refuses it on every call of a connection opened before.

use std::{fmt, io, sync::Arc};

use futures::{Stream, StreamExt};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, UnixTime},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::debug;

use super::{
    LiveTls, NodeCredentials, PkiError, peer_identity, pem,
    tls::{ALPN_H2, HANDSHAKE_TIMEOUT},
};

/// Handshakes in progress at once; the connection bounds in front of the server keep the
/// number of connections below this anyway.
const CONCURRENT_HANDSHAKES: usize = 1024;

/// The nodes whose certificates the server refuses although the CA signed them.
pub trait Revocations: Send + Sync + fmt::Debug {
    /// Whether the swarm removed `node_id`.
    fn is_revoked(&self, node_id: &str) -> bool;
}

/// For a server that knows of no removals (a worker: it serves only the managers the leader
/// names, which authorization checks on each call).
#[derive(Debug)]
pub struct NoRevocations;

impl Revocations for NoRevocations {
    fn is_revoked(&self, _: &str) -> bool {
        false
    }
}

/// The TLS configuration of a node's 2377 server.
///
/// The server presents its node certificate (with its intermediate during a root rotation)
/// followed by the CA certificates (a joining node has no CA yet: it finds the CA in the chain
/// and checks it against its token). Client certificates are verified against the swarm's
/// roots (both during a rotation) and the revocation list when presented, but are OPTIONAL: a
/// node that is joining has none and must still reach the Admit call. Authorization is
/// therefore per call: handlers read `request.peer_certs()` and [`super::peer_identity`], and
/// treat a call without a certificate as anonymous.
pub fn server_config(
    creds: &NodeCredentials,
    revocations: Arc<dyn Revocations>,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cas = pem::certs_der(&creds.ca_cert_pem, "the CA certificates")?;
    let mut chain = pem::certs_der(&creds.cert_pem, "the node certificate")?;
    let key = pem::key_der(&creds.key_pem, "the node key")?;
    let tls = |source| PkiError::Tls { source };
    let mut roots = RootCertStore::empty();
    for ca in &cas {
        roots.add(ca.clone()).map_err(tls)?;
    }
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls(rustls::Error::General(format!("client verifier: {e}"))))?;
    let verifier = Arc::new(RevokingVerifier {
        webpki,
        revocations,
    });
    chain.extend(cas);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The TLS connections of `incoming`, each handshake bounded by [`HANDSHAKE_TIMEOUT`] and run
/// concurrently with the others (a slow client never holds up the next), each with the
/// server configuration `tls` holds when it is accepted: a renewed certificate or a new set of
/// roots is used from the next connection on, and open ones keep theirs. Failed handshakes are
/// dropped here, logged at debug level: they never reach the gRPC server.
pub fn handshakes<S, IO>(
    incoming: S,
    tls: Arc<LiveTls>,
) -> impl Stream<Item = io::Result<TlsStream<IO>>> + Send + 'static
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    incoming
        .map(move |accepted| {
            let acceptor = TlsAcceptor::from(tls.server_config());
            async move {
                let stream = accepted?;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => Ok(Some(tls)),
                    Ok(Err(e)) => {
                        debug!(cause = %e, "2377: TLS handshake failed");
                        Ok(None)
                    }
                    Err(_) => {
                        debug!("2377: TLS handshake timed out");
                        Ok(None)
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENT_HANDSHAKES)
        .filter_map(|result: io::Result<Option<TlsStream<IO>>>| async move { result.transpose() })
}

/// The CA's verdict (webpki), then the revocation list's.
#[derive(Debug)]
struct RevokingVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    revocations: Arc<dyn Revocations>,
}

impl ClientCertVerifier for RevokingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        let peer = peer_identity(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.revocations.is_revoked(&peer.node_id) {
            debug!(node = %peer.node_id, "2377: certificate of a removed node refused");
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
