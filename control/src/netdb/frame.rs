//! The push-pull frame on TCP, and its deadlines:
//!
//! `[header: wire packet sealing the body's length, u32 BE; 34 bytes][body: one wire packet]`
//!
//! Both are sealed like the UDP packets (`wire`: AES-256-GCM with the key ring). The header has
//! a fixed size, so the receiver reads exactly [`HEADER_LEN`] bytes, opens them, and only then
//! learns how much to expect: a stranger without the key never gets past 34 bytes, so it cannot
//! make us allocate anything.
//!
//! Why the body is one sealed packet rather than sealed chunks: past an open header, the sender
//! holds the key (a member) or replays a header it captured on the wire. A replayer can make us
//! buffer up to the announced length (whatever a member once sent, never above [`MAX_BODY`]),
//! but only as fast as it sends those bytes itself, since the buffer grows as they arrive, for
//! at most the transfer deadline, on one of the few connections `admission` lets it hold; its
//! garbage then fails the tag. No amplification is left, so the simpler format wins.
//!
//! Deadlines drop slow senders: the header within [`HEADER_DEADLINE`] (a stranger holds a
//! connection that long at most), the whole frame within [`transfer_deadline`] of its length:
//! a floor plus 1 s per MiB, so a big table on a slow link still makes it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::stats::Stats;
use super::wire::{self, DropReason};
use super::{NetDbError, Shared};

/// The sealed header: the wire overhead around a u32.
pub(crate) const HEADER_LEN: usize = wire::OVERHEAD + 4;
/// Largest body accepted or sent (a full table of 100k entries fits).
pub(crate) const MAX_BODY: usize = 64 << 20;
/// How long an accepted connection may take to deliver its header.
pub(crate) const HEADER_DEADLINE: Duration = Duration::from_secs(2);
/// The least time any transfer (or a connect, or waiting for a peer's reply) is given.
pub(crate) const TRANSFER_FLOOR: Duration = Duration::from_secs(5);
/// The slowest transfer rate accepted above the floor.
const MIN_BYTES_PER_SEC: u64 = 1 << 20;
/// The body's first allocation; it then grows with what arrives.
const FIRST_READ: usize = 64 << 10;

/// How long a frame with a body of `len` bytes may take, header included.
pub(crate) fn transfer_deadline(len: usize) -> Duration {
    TRANSFER_FLOOR + Duration::from_millis(len as u64 * 1000 / MIN_BYTES_PER_SEC)
}

fn seal(shared: &Shared, plain: &[u8]) -> Result<Vec<u8>, NetDbError> {
    shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .seal(plain)
        .ok_or(NetDbError::NoKeys)
}

fn open(
    shared: &Shared,
    peer: SocketAddr,
    part: &'static str,
    packet: &[u8],
) -> Result<Vec<u8>, NetDbError> {
    let opened = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .open(packet);
    opened.map_err(|reason| {
        Stats::inc(shared.stats.dropped(reason));
        NetDbError::Rejected { peer, part, reason }
    })
}

/// Counts a missed deadline and says which.
pub(crate) fn missed(
    shared: &Shared,
    peer: SocketAddr,
    step: &'static str,
    limit: Duration,
) -> NetDbError {
    Stats::inc(&shared.stats.pushpull_timed_out);
    NetDbError::Deadline { peer, step, limit }
}

/// Seals `plain` and sends it to `peer` within its transfer deadline.
pub(crate) async fn write(
    shared: &Shared,
    s: &mut TcpStream,
    peer: SocketAddr,
    plain: &[u8],
) -> Result<(), NetDbError> {
    let body = seal(shared, plain)?;
    if body.len() > MAX_BODY {
        return Err(NetDbError::FrameTooLarge(body.len()));
    }
    // Fits in a u32: MAX_BODY does.
    let header = seal(shared, &(body.len() as u32).to_be_bytes())?;
    let limit = transfer_deadline(body.len());
    let send = async {
        s.write_all(&header).await?;
        s.write_all(&body).await
    };
    timeout_at(Instant::now() + limit, send)
        .await
        .map_err(|_| missed(shared, peer, "sending", limit))?
        .map_err(|e| NetDbError::PushPullIo(peer, e))?;
    Stats::inc(&shared.stats.sent);
    Ok(())
}

/// Reads one frame from `peer` and returns its opened body. The header must arrive within
/// `header_within`, the whole frame within its transfer deadline; both count from the call.
/// Nothing beyond the header is allocated before the header opens with one of our keys.
pub(crate) async fn read(
    shared: &Shared,
    s: &mut TcpStream,
    peer: SocketAddr,
    header_within: Duration,
) -> Result<Vec<u8>, NetDbError> {
    let start = Instant::now();
    let mut header = [0u8; HEADER_LEN];
    match timeout_at(start + header_within, s.read_exact(&mut header)).await {
        Err(_) => return Err(missed(shared, peer, "header", header_within)),
        // Closed before a whole header: not a frame (a refused client sees this too).
        Ok(Err(e)) => return Err(NetDbError::PushPullIo(peer, e)),
        Ok(Ok(_)) => {}
    }
    Stats::inc(&shared.stats.received);
    let len = open(shared, peer, "header", &header)?;
    let Ok(len) = <[u8; 4]>::try_from(len.as_slice()) else {
        Stats::inc(shared.stats.dropped(DropReason::Malformed));
        return Err(NetDbError::Rejected {
            peer,
            part: "header",
            reason: DropReason::Malformed,
        });
    };
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_BODY {
        Stats::inc(shared.stats.dropped(DropReason::Malformed));
        return Err(NetDbError::FrameTooLarge(len));
    }
    // Grows as bytes arrive (doubling), so a sender that announces more than it sends gets
    // no more memory than it sent.
    let mut body = Vec::with_capacity(len.min(FIRST_READ));
    let limit = transfer_deadline(len);
    let mut announced = (&mut *s).take(len as u64);
    let receive = announced.read_to_end(&mut body);
    match timeout_at(start + limit, receive).await {
        Err(_) => return Err(missed(shared, peer, "frame", limit)),
        Ok(Err(e)) => return Err(NetDbError::PushPullIo(peer, e)),
        Ok(Ok(n)) if n < len => {
            Stats::inc(shared.stats.dropped(DropReason::Truncated));
            return Err(NetDbError::PushPullIo(
                peer,
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        Ok(Ok(_)) => {}
    }
    open(shared, peer, "body", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_size_and_deadlines() {
        assert_eq!(HEADER_LEN, 34);
        assert_eq!(transfer_deadline(0), TRANSFER_FLOOR);
        assert_eq!(
            transfer_deadline(MAX_BODY),
            TRANSFER_FLOOR + Duration::from_secs(64)
        );
    }
}
