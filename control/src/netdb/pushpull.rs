//! Full-state push-pull over TCP: on join (so a late joiner gets the whole table at once) and
//! periodically (to repair anything the UDP broadcasts lost). Each side sends every record it
//! holds, tombstones included, and merges the other's. Both also send the members they see
//! alive, so a joiner knows the whole cluster at once instead of meeting it one probe at a time.
//!
//! Records are merged like broadcasts (each new version's signature checked once), but the
//! checks run before the table is locked, all together (Ed25519 signatures in batches).
//!
//! One frame each way (`frame`: a sealed header, then the body), the initiator first. The
//! server admits a connection (`admission`) before reading from it; a client whose connection
//! is closed without an answer (refused by a cap) tries again a little later.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

use crate::error_chain::Chain;

use super::admission::{Admission, PushPullLimits};
use super::frame::{self, HEADER_DEADLINE, TRANSFER_FLOOR};
use super::member::Member;
use super::sign::{self, PublicKey};
use super::stats::Stats;
use super::table::Record;
use super::{Cmd, NetDbError, Shared, lock};

/// Attempts after the first when the peer closes the connection without answering.
const RETRIES: u32 = 2;
/// Wait before the first retry; doubled for each next one.
const RETRY_AFTER: Duration = Duration::from_millis(300);

#[derive(Serialize, Deserialize)]
struct PushPull {
    from: Member,
    /// Members the sender sees alive (itself excluded; `from` is announced separately).
    members: Vec<Member>,
    records: Vec<Record>,
}

fn ours(shared: &Shared) -> Result<Vec<u8>, NetDbError> {
    let members = lock(&shared.members)
        .iter()
        .filter(|(_, alive)| **alive)
        .map(|(m, _)| m.clone())
        .collect();
    let msg = PushPull {
        from: lock(&shared.identity).clone(),
        members,
        records: lock(&shared.table).snapshot(),
    };
    postcard::to_allocvec(&msg).map_err(NetDbError::Encode)
}

fn decode(shared: &Shared, plain: &[u8]) -> Result<PushPull, NetDbError> {
    postcard::from_bytes(plain).map_err(|e| {
        Stats::inc(&shared.stats.dropped_malformed);
        NetDbError::Decode(e)
    })
}

fn merge(shared: &Shared, msg: PushPull) {
    let checked = check(shared, &msg.records);
    let mut table = lock(&shared.table);
    for (rec, checked) in msg.records.into_iter().zip(checked) {
        table.merge_checked(rec, checked);
    }
    drop(table);
    Stats::inc(&shared.stats.pushpulls_merged);
    if !msg.members.is_empty() {
        let _ = shared.cmd.send(Cmd::Learn(msg.members));
    }
    // Re-assertions of our own entries may have been queued.
    let _ = shared.cmd.send(Cmd::Flush);
}

/// Verifies the signatures of the records that would change something, without the table's
/// lock (a joiner gets every entry at once, each new to it), so the engine keeps answering
/// probes meanwhile. All at once: Ed25519 signatures are checked in batches (`sign`), at under
/// half the cost of one by one. `None`: left to the merge (nothing new, an unknown owner, ours).
fn check(shared: &Shared, records: &[Record]) -> Vec<Option<bool>> {
    let keys: Vec<Option<PublicKey>> = {
        let table = lock(&shared.table);
        records.iter().map(|r| table.key_to_check(r)).collect()
    };
    let entries: Vec<_> = records
        .iter()
        .zip(&keys)
        .filter_map(|(rec, key)| key.as_ref().map(|key| key.record(rec)))
        .collect();
    // One per signature, as `Stats::inc` counts the ones checked alone.
    shared
        .stats
        .entries_verified
        .fetch_add(entries.len() as u64, Ordering::Relaxed);
    let mut valid = sign::verify_entries(&entries).into_iter();
    keys.iter()
        .map(|key| key.as_ref().and_then(|_| valid.next()))
        .collect()
}

/// Pushes our table to `addr`, pulls theirs; returns their identity (used to announce to them).
pub(crate) async fn exchange(shared: &Shared, addr: SocketAddr) -> Result<Member, NetDbError> {
    let mut wait = RETRY_AFTER;
    let mut retries = RETRIES;
    loop {
        match exchange_once(shared, addr).await {
            // Accepted, then closed without an answer: most likely refused by one of the
            // peer's caps (a join burst, or a flood from elsewhere), which frees up soon.
            Err(NetDbError::PushPullIo(..)) if retries > 0 => {
                retries -= 1;
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            result => return result,
        }
    }
}

async fn exchange_once(shared: &Shared, addr: SocketAddr) -> Result<Member, NetDbError> {
    let mut s = tokio::time::timeout(TRANSFER_FLOOR, TcpStream::connect(addr))
        .await
        .map_err(|_| frame::missed(shared, addr, "connecting", TRANSFER_FLOOR))?
        .map_err(|e| NetDbError::Connect(addr, e))?;
    frame::write(shared, &mut s, addr, &ours(shared)?).await?;
    // The peer reads our whole frame and seals its own table before answering.
    let reply = frame::read(shared, &mut s, addr, TRANSFER_FLOOR).await?;
    let theirs = decode(shared, &reply)?;
    drop(reply);
    let from = theirs.from.clone();
    merge(shared, theirs);
    Ok(from)
}

/// Answers one admitted connection.
async fn answer(shared: &Shared, mut s: TcpStream, peer: SocketAddr) -> Result<(), NetDbError> {
    let request = frame::read(shared, &mut s, peer, HEADER_DEADLINE).await?;
    let theirs = decode(shared, &request)?;
    drop(request);
    // Reply with our state before merging theirs, so the reply is not inflated.
    frame::write(shared, &mut s, peer, &ours(shared)?).await?;
    merge(shared, theirs);
    Ok(())
}

/// Answers push-pulls until the listener task is dropped (the engine's shutdown aborts it).
/// Connections over `limits` are closed as soon as they are accepted, and counted.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, limits: PushPullLimits) {
    let admission = Admission::new(limits);
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, mostly: back off instead of spinning.
                tracing::debug!(error = %e, "netdb: accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match admission.admit(peer.ip(), std::time::Instant::now()) {
            Ok(permit) => permit,
            Err(refusal) => {
                Stats::inc(shared.stats.refused(refusal));
                tracing::debug!(%peer, reason = %refusal, "netdb: push-pull connection refused");
                drop(s);
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(&shared, s, peer).await {
                tracing::debug!(%peer, error = %Chain(&e), "netdb: push-pull refused");
            }
            drop(permit);
        });
    }
}
