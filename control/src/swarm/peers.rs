//! Clients for other nodes' APIs on 2377, over mutual TLS with this node's certificate. One
//! lazily connected channel per address, reused by every call (tonic multiplexes on HTTP/2),
//! until the node's credentials change: then every call opens new ones.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use std::sync::Arc;

use tonic::transport::Channel;

use super::error::Error;
use crate::api::cluster_client::ClusterClient;
use crate::pki::LiveTls;
use crate::wire_limits::cluster_client;

/// How long a call to another node may take before it counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Peers {
    tls: Arc<LiveTls>,
    channels: Mutex<HashMap<SocketAddr, Channel>>,
}

impl Peers {
    pub fn new(tls: Arc<LiveTls>) -> Self {
        Peers {
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every channel: the next calls connect anew, with the credentials of the
    /// moment (a channel reconnects with them anyway; this also closes the connections made
    /// with the previous ones once their calls are done).
    pub fn reset(&self) {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// A client for the node at `addr`. Connects on first use; fails only on a bad config.
    pub fn client(&self, addr: SocketAddr) -> Result<ClusterClient<Channel>, Error> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(&addr) {
            return Ok(cluster_client(channel.clone()));
        }
        let channel = self
            .tls
            .channel(addr, CONNECT_TIMEOUT, CALL_TIMEOUT)
            .map_err(Error::pki("configuring the endpoint of a peer"))?;
        channels.insert(addr, channel.clone());
        Ok(cluster_client(channel))
    }
}
