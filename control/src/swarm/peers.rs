//! Clients for other nodes' APIs on 2377, over mutual TLS with this node's certificate. One
//! lazily connected channel per address, reused by every call (tonic multiplexes on HTTP/2).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::error::Error;
use crate::api::cluster_client::ClusterClient;
use crate::wire_limits::cluster_client;

/// How long a call to another node may take before it counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Peers {
    tls: ClientTlsConfig,
    channels: Mutex<HashMap<SocketAddr, Channel>>,
}

impl Peers {
    pub fn new(tls: ClientTlsConfig) -> Self {
        Peers {
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// A client for the node at `addr`. Connects on first use; fails only on a bad config.
    pub fn client(&self, addr: SocketAddr) -> Result<ClusterClient<Channel>, Error> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(&addr) {
            return Ok(cluster_client(channel.clone()));
        }
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .and_then(|e| e.tls_config(self.tls.clone()))
            .map_err(Error::internal("configuring the endpoint of a peer"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        channels.insert(addr, channel.clone());
        Ok(cluster_client(channel))
    }
}
