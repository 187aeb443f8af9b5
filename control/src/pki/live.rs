//! [`LiveTls`]: a node's TLS identity and trust as they are now, replaced in place when its
//! certificate is renewed or the swarm's roots change (a CA rotation), with no restart.
//!
//! Each set of credentials gets its own rustls client and server configurations, built once.
//! The 2377 server's handshakes ([`super::handshakes`]) and every client connection
//! ([`LiveTls::channel`]) take the configuration current when they start: new connections use
//! the new certificate, connections already open keep the one they were made with (a TLS
//! connection is authenticated once, at its handshake). A new configuration also starts with an
//! empty session cache, so no connection resumes a session of the previous certificate.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    time::Duration,
};

use rustls::{ClientConfig, ServerConfig};
use tonic::{
    codegen::http::Uri,
    transport::{Channel, Endpoint},
};

use super::{
    CertInfo, NodeCredentials, PkiError, Revocations, cert_info, tls::client_config,
    tls::tls_connect, tls_server::server_config,
};

/// A node's current TLS material. Shared by its 2377 server and its clients.
pub struct LiveTls {
    current: RwLock<Arc<TlsSet>>,
    /// Given once the manager's store is open (after the clients exist, since Raft needs them).
    revocations: Arc<LateRevocations>,
}

/// One set of credentials and the TLS configurations made from it.
pub struct TlsSet {
    pub creds: NodeCredentials,
    /// The node certificate's serial, validity and fingerprint.
    pub cert: CertInfo,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl LiveTls {
    /// The TLS material of `creds`, which must parse and agree (the key is the certificate's).
    pub fn new(creds: NodeCredentials) -> Result<Arc<LiveTls>, PkiError> {
        let revocations = Arc::new(LateRevocations::default());
        let set = build(creds, Arc::clone(&revocations) as Arc<dyn Revocations>)?;
        Ok(Arc::new(LiveTls {
            current: RwLock::new(Arc::new(set)),
            revocations,
        }))
    }

    /// The removed nodes the server refuses from now on. Only the first call counts.
    pub fn set_revocations(&self, revocations: Arc<dyn Revocations>) {
        let _ = self.revocations.0.set(revocations);
    }

    /// The set in use now.
    pub fn current(&self) -> Arc<TlsSet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The credentials in use now.
    pub fn creds(&self) -> NodeCredentials {
        self.current().creds.clone()
    }

    /// The TLS material of `creds`, checked and built, not in use yet: a caller that must
    /// save them first does so between this and [`LiveTls::install`].
    pub fn prepare(&self, creds: NodeCredentials) -> Result<Arc<TlsSet>, PkiError> {
        Ok(Arc::new(build(
            creds,
            Arc::clone(&self.revocations) as Arc<dyn Revocations>,
        )?))
    }

    /// Uses `set` for every connection from now on.
    pub fn install(&self, set: Arc<TlsSet>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = set;
    }

    /// [`LiveTls::prepare`] then [`LiveTls::install`]. Nothing changes if `creds` do not parse.
    pub fn replace(&self, creds: NodeCredentials) -> Result<Arc<TlsSet>, PkiError> {
        let set = self.prepare(creds)?;
        self.install(Arc::clone(&set));
        Ok(set)
    }

    pub(super) fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current().server)
    }

    /// A lazily connected channel to the node at `addr`, over mutual TLS with the credentials
    /// current at each (re)connection.
    pub fn channel(
        self: &Arc<Self>,
        addr: SocketAddr,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Channel, PkiError> {
        let live = Arc::clone(self);
        // tonic sees a plain `http://` endpoint; the connector does TCP and TLS itself, so
        // each connection takes the configuration of the moment (tonic's `ClientTlsConfig` is
        // fixed when the channel is made).
        let connect = tower::service_fn(move |_: Uri| {
            let config = Arc::clone(&live.current().client);
            tls_connect(addr, config)
        });
        Ok(Endpoint::from_shared(format!("http://{addr}"))
            .and_then(|e| e.user_agent(crate::version::user_agent()))
            .map_err(|source| PkiError::Connect { addr, source })?
            .connect_timeout(connect_timeout)
            .timeout(call_timeout)
            .connect_with_connector_lazy(connect))
    }
}

fn build(creds: NodeCredentials, revocations: Arc<dyn Revocations>) -> Result<TlsSet, PkiError> {
    Ok(TlsSet {
        cert: cert_info(&creds.cert_pem)?,
        client: client_config(&creds)?,
        server: server_config(&creds, revocations)?,
        creds,
    })
}

/// Revocations that exist once they are set; none before.
#[derive(Debug, Default)]
struct LateRevocations(OnceLock<Arc<dyn Revocations>>);

impl Revocations for LateRevocations {
    fn is_revoked(&self, node_id: &str) -> bool {
        self.0.get().is_some_and(|r| r.is_revoked(node_id))
    }
}
