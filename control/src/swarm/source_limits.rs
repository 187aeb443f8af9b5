//! Bounds on what a stranger can make the 2377 server hold: live connections per source
//! address and in all, and join attempts per source address (each guesses a token).
//!
//! A connection counts from accept to close, TLS handshake included (the handshake itself is
//! bounded in time by the TLS configuration), so a source that opens connections and never
//! completes them runs out of its share while other nodes still get in. Join attempts are a
//! token bucket per address: a burst, then one every few seconds, which leaves a secret of
//! 25 random characters out of reach while a node retrying a typo is not locked out.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

use super::error::Error;

/// Live connections one source address may hold.
pub const CONNECTIONS_PER_SOURCE: usize = 32;
/// Live connections in all.
pub const CONNECTIONS_TOTAL: usize = 1024;
/// Join attempts a source may make at once, before it has to wait.
pub const JOIN_BURST: u32 = 10;
/// How often a source earns one more join attempt.
pub const JOIN_EVERY: Duration = Duration::from_secs(1);
/// How long a request may take before it is answered with a timeout (streams excepted).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The bounds of one 2377 server, shared by its connections and its service.
#[derive(Default)]
pub struct SourceLimits {
    live: Mutex<HashMap<IpAddr, usize>>,
    joins: Mutex<HashMap<IpAddr, Bucket>>,
}

/// A token bucket of join attempts.
struct Bucket {
    tokens: u32,
    last: Instant,
}

impl SourceLimits {
    /// The accepted connections of `listener` that are within bounds; the others are closed
    /// at once (dropped), and counted in the log at debug level.
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Counted>> + Send + 'static {
        let limits = Arc::clone(self);
        TcpListenerStream::new(listener).filter_map(move |accepted| {
            let limits = Arc::clone(&limits);
            async move {
                match accepted {
                    Err(e) => Some(Err(e)),
                    Ok(stream) => {
                        let source = stream.peer_addr().ok()?.ip();
                        match limits.open(source) {
                            Some(slot) => Some(Ok(Counted {
                                stream,
                                _slot: slot,
                            })),
                            None => {
                                debug!(%source, "2377: connection refused, over its source's bound");
                                None
                            }
                        }
                    }
                }
            }
        })
    }

    fn open(self: &Arc<Self>, source: IpAddr) -> Option<Slot> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let total: usize = live.values().sum();
        let mine = live.entry(source).or_insert(0);
        if *mine >= CONNECTIONS_PER_SOURCE || total >= CONNECTIONS_TOTAL {
            return None;
        }
        *mine += 1;
        Some(Slot {
            limits: Arc::clone(self),
            source,
        })
    }

    fn close(&self, source: IpAddr) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = live.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                live.remove(&source);
            }
        }
    }

    /// Takes one join attempt from `source`'s bucket, or refuses it.
    pub fn join_attempt(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Error> {
        let Some(source) = source else {
            return Ok(());
        };
        let mut joins = self.joins.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = joins.entry(source).or_insert(Bucket {
            tokens: JOIN_BURST,
            last: now,
        });
        let earned =
            now.saturating_duration_since(bucket.last).as_millis() / JOIN_EVERY.as_millis().max(1);
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            bucket.tokens = bucket.tokens.saturating_add(earned).min(JOIN_BURST);
            bucket.last = now;
        }
        if bucket.tokens == 0 {
            return Err(Error::exhausted(format!(
                "too many join attempts from {source}: retry in {} seconds",
                JOIN_EVERY.as_secs()
            )));
        }
        bucket.tokens -= 1;
        // Forget sources whose buckets are full again, so the table stays small.
        if joins.len() > 4096 {
            joins.retain(|_, b| now.saturating_duration_since(b.last) < JOIN_EVERY * JOIN_BURST);
        }
        Ok(())
    }
}

/// One live connection's place in its source's count, given back on drop.
struct Slot {
    limits: Arc<SourceLimits>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.close(self.source);
    }
}

/// An accepted connection that holds its place in the bounds until it closes.
pub struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_a_burst_of_join_attempts_then_one_per_period() {
        let limits = SourceLimits::default();
        let source = Some(IpAddr::from([192, 0, 2, 1]));
        let other = Some(IpAddr::from([192, 0, 2, 2]));
        let t0 = Instant::now();
        for _ in 0..JOIN_BURST {
            limits.join_attempt(source, t0).unwrap();
        }
        assert!(limits.join_attempt(source, t0).is_err(), "past the burst");
        limits.join_attempt(other, t0).unwrap();
        assert!(limits.join_attempt(source, t0 + JOIN_EVERY / 2).is_err());
        limits.join_attempt(source, t0 + JOIN_EVERY).unwrap();
        assert!(limits.join_attempt(source, t0 + JOIN_EVERY).is_err());
    }

    #[test]
    fn connections_are_bounded_per_source_and_given_back_on_close() {
        let limits = Arc::new(SourceLimits::default());
        let source = IpAddr::from([192, 0, 2, 1]);
        let slots: Vec<Slot> = (0..CONNECTIONS_PER_SOURCE)
            .map(|_| limits.open(source).unwrap())
            .collect();
        assert!(limits.open(source).is_none(), "past the source's bound");
        assert!(limits.open(IpAddr::from([192, 0, 2, 2])).is_some());
        drop(slots);
        assert!(limits.open(source).is_some(), "given back on close");
    }
}
