//! Full-state push-pull over TCP: on join (so a late joiner gets the whole table at once) and
//! periodically (to repair anything the UDP broadcasts lost). Each side sends every record it
//! holds, tombstones included, and merges the other's. Both also send the members they see
//! alive, so a joiner knows the whole cluster at once instead of meeting it one probe at a time.
//!
//! Frame: `[len u32 BE][wire packet]`, the packet encrypted like the UDP ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error_chain::Chain;

use super::member::Member;
use super::stats::Stats;
use super::table::Record;
use super::{Cmd, NetDbError, Shared, lock};

/// A frame larger than this is refused before allocating (a full table of 100k entries fits).
const MAX_FRAME: usize = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct PushPull {
    from: Member,
    /// Members the sender sees alive (itself excluded; `from` is announced separately).
    members: Vec<Member>,
    records: Vec<Record>,
}

fn ours(shared: &Shared) -> PushPull {
    let members = lock(&shared.members)
        .iter()
        .filter(|(_, alive)| **alive)
        .map(|(m, _)| m.clone())
        .collect();
    PushPull {
        from: lock(&shared.identity).clone(),
        members,
        records: lock(&shared.table).snapshot(),
    }
}

fn merge(shared: &Shared, msg: PushPull) {
    let mut table = lock(&shared.table);
    for rec in msg.records {
        table.merge(rec);
    }
    drop(table);
    if !msg.members.is_empty() {
        let _ = shared.cmd.send(Cmd::Learn(msg.members));
    }
    // Re-assertions of our own entries may have been queued.
    let _ = shared.cmd.send(Cmd::Flush);
}

async fn write_frame(shared: &Shared, s: &mut TcpStream, msg: &PushPull) -> Result<(), NetDbError> {
    let plain = postcard::to_allocvec(msg).map_err(NetDbError::Encode)?;
    let packet = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .seal(&plain)
        .ok_or(NetDbError::NoKeys)?;
    let len = u32::try_from(packet.len()).map_err(|_| NetDbError::FrameTooLarge(packet.len()))?;
    s.write_all(&len.to_be_bytes())
        .await
        .map_err(NetDbError::PushPullIo)?;
    s.write_all(&packet).await.map_err(NetDbError::PushPullIo)?;
    Stats::inc(&shared.stats.sent);
    Ok(())
}

async fn read_frame(shared: &Shared, s: &mut TcpStream) -> Result<PushPull, NetDbError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .await
        .map_err(NetDbError::PushPullIo)?;
    let len = u32::from_be_bytes(len) as usize;
    Stats::inc(&shared.stats.received);
    if len > MAX_FRAME {
        Stats::inc(&shared.stats.dropped_malformed);
        return Err(NetDbError::FrameTooLarge(len));
    }
    let mut packet = vec![0u8; len];
    if let Err(e) = s.read_exact(&mut packet).await {
        Stats::inc(&shared.stats.dropped_truncated);
        return Err(NetDbError::PushPullIo(e));
    }
    let opened = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .open(&packet);
    let plain = opened.map_err(|reason| {
        Stats::inc(shared.stats.dropped(reason));
        NetDbError::Rejected(reason)
    })?;
    postcard::from_bytes(&plain).map_err(|e| {
        Stats::inc(&shared.stats.dropped_malformed);
        NetDbError::Decode(e)
    })
}

/// Pushes our table to `addr`, pulls theirs; returns their identity (used to announce to them).
pub(crate) async fn exchange(shared: &Shared, addr: SocketAddr) -> Result<Member, NetDbError> {
    let run = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| NetDbError::Connect(addr, e))?;
        write_frame(shared, &mut s, &ours(shared)).await?;
        let theirs = read_frame(shared, &mut s).await?;
        let from = theirs.from.clone();
        merge(shared, theirs);
        Ok(from)
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| NetDbError::Timeout(addr))?
}

/// Answers push-pulls until the listener task is dropped (the engine's shutdown aborts it).
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (mut s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(err) => {
                tracing::debug!(%err, "netdb: accept");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let run = async {
                let theirs = read_frame(&shared, &mut s).await?;
                // Reply with our state before merging theirs, so the reply is not inflated.
                write_frame(&shared, &mut s, &ours(&shared)).await?;
                merge(&shared, theirs);
                Ok::<(), NetDbError>(())
            };
            match tokio::time::timeout(TIMEOUT, run).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(%peer, err = %Chain(&err), "netdb: push-pull refused")
                }
                Err(_) => tracing::debug!(%peer, "netdb: push-pull timed out"),
            }
        });
    }
}
