//! Who may open a push-pull connection, decided at accept, before a byte is read: a cap on the
//! connections served at once, a smaller one per source address, and a per-source rate. A
//! refused connection is closed at once and counted by reason.
//!
//! The sealed header (`frame`) already keeps a stranger from making us allocate; these caps
//! bound what is left: the tasks, sockets and header waits a stranger can hold (each at most
//! `frame::HEADER_DEADLINE`), and the CPU spent accepting. Legitimate traffic is far below them:
//! a member opens one push-pull to a given peer every 30 s, plus one on join and a few when it
//! joins networks (the client retries those it loses to a cap).
//!
//! The rate is a GCRA (a token bucket kept as one instant per source: the "theoretical arrival
//! time" of the next connection), so a source costs one small map entry, which is forgotten
//! once the source is idle and its bucket full again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;

/// Limits on incoming push-pull connections; [`Default`] is the production setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushPullLimits {
    /// Connections served at once, from everyone.
    pub max_connections: usize,
    /// Connections served at once from one source address.
    pub max_per_source: usize,
    /// New connections one source may open per second, on average.
    pub per_source_rate: u32,
    /// How many it may open at once after a quiet spell (the bucket's depth).
    pub per_source_burst: u32,
}

impl Default for PushPullLimits {
    fn default() -> PushPullLimits {
        PushPullLimits {
            max_connections: 32,
            max_per_source: 4,
            per_source_rate: 4,
            per_source_burst: 8,
        }
    }
}

/// Why a connection was refused; each maps onto a stats counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("too many push-pull connections")]
    Busy,
    #[error("too many push-pull connections from this source")]
    SourceBusy,
    #[error("push-pull connections from this source come too fast")]
    TooFast,
}

/// Sources remembered at most. Idle sources are forgotten first; if that is not enough (a
/// stranger cycling through many addresses, each still rate-limited), new sources are refused
/// as [`Refusal::Busy`] until some become idle, so the map cannot grow without bound.
const MAX_SOURCES: usize = 4096;

pub(crate) struct Admission {
    limits: PushPullLimits,
    /// Time between two connections of one source at the sustained rate.
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connections being served (the sum of every source's `active`).
    active: usize,
    sources: HashMap<IpAddr, Source>,
}

struct Source {
    active: usize,
    /// When the source's bucket is full again; it may open a connection if this is at most
    /// `burst - 1` intervals away.
    tat: Instant,
}

/// An admitted connection; dropping it frees its place.
pub(crate) struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub(crate) fn new(limits: PushPullLimits) -> Arc<Admission> {
        let interval = Duration::from_secs(1) / limits.per_source_rate.max(1);
        Arc::new(Admission {
            limits,
            interval,
            state: Mutex::new(State::default()),
        })
    }

    /// Admits a connection from `ip` at `now`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Permit, Refusal> {
        // An IPv4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d: one source either way.
        let ip = ip.to_canonical();
        let mut state = lock(&self.state);
        if state.active >= self.limits.max_connections {
            return Err(Refusal::Busy);
        }
        if !state.sources.contains_key(&ip) && state.sources.len() >= MAX_SOURCES {
            state.sources.retain(|_, s| s.active > 0 || s.tat > now);
            if state.sources.len() >= MAX_SOURCES {
                return Err(Refusal::Busy);
            }
        }
        let source = state.sources.entry(ip).or_insert(Source {
            active: 0,
            tat: now,
        });
        if source.active >= self.limits.max_per_source {
            return Err(Refusal::SourceBusy);
        }
        let tat = source.tat.max(now);
        let slack = self.interval * self.limits.per_source_burst.saturating_sub(1);
        if tat.duration_since(now) > slack {
            return Err(Refusal::TooFast);
        }
        source.tat = tat + self.interval;
        source.active += 1;
        state.active += 1;
        Ok(Permit {
            admission: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn active(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.active, state.sources.len())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = lock(&self.admission.state);
        state.active = state.active.saturating_sub(1);
        if let Some(source) = state.sources.get_mut(&self.ip) {
            source.active = source.active.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    const LIMITS: PushPullLimits = PushPullLimits {
        max_connections: 5,
        max_per_source: 3,
        per_source_rate: 2,
        per_source_burst: 4,
    };

    #[test]
    fn caps_in_total_and_per_source() {
        let a = Admission::new(PushPullLimits {
            per_source_burst: 100,
            ..LIMITS
        });
        let now = Instant::now();
        let mut held: Vec<Permit> = (0..3).map(|_| a.admit(ip(1), now).unwrap()).collect();
        assert_eq!(a.admit(ip(1), now).err(), Some(Refusal::SourceBusy));
        held.push(a.admit(ip(2), now).unwrap());
        held.push(a.admit(ip(3), now).unwrap());
        assert_eq!(a.admit(ip(4), now).err(), Some(Refusal::Busy));
        // Freeing one place of source 1 lets source 1 (or anyone) back in.
        held.remove(0);
        assert_eq!(a.active(), (4, 3));
        held.push(a.admit(ip(1), now).unwrap());
        drop(held);
        assert_eq!(a.active().0, 0);
    }

    #[test]
    fn rate_per_source_with_a_burst() {
        let a = Admission::new(LIMITS);
        let t0 = Instant::now();
        // A burst of 4, each connection done before the next.
        for _ in 0..4 {
            drop(a.admit(ip(1), t0).unwrap());
        }
        assert_eq!(a.admit(ip(1), t0).err(), Some(Refusal::TooFast));
        // Another source has its own bucket.
        drop(a.admit(ip(2), t0).unwrap());
        // 2 per second: one more after 500 ms, not two.
        let t1 = t0 + Duration::from_millis(500);
        drop(a.admit(ip(1), t1).unwrap());
        assert_eq!(a.admit(ip(1), t1).err(), Some(Refusal::TooFast));
        // After a quiet spell the whole burst is back.
        let t2 = t1 + Duration::from_secs(10);
        for _ in 0..4 {
            drop(a.admit(ip(1), t2).unwrap());
        }
        // IPv4-mapped IPv6 is the same source.
        let mapped = IpAddr::from(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(a.admit(mapped, t2).err(), Some(Refusal::TooFast));
    }

    #[test]
    fn idle_sources_are_forgotten() {
        let a = Admission::new(PushPullLimits {
            max_connections: usize::MAX,
            ..LIMITS
        });
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            drop(a.admit(IpAddr::from(i.to_be_bytes()), t0).unwrap());
        }
        // Every bucket still refills: a new source is refused rather than the map growing.
        assert_eq!(a.admit(ip(250), t0).err(), Some(Refusal::Busy));
        let later = t0 + Duration::from_secs(1);
        drop(a.admit(ip(250), later).unwrap());
        assert_eq!(a.active(), (0, 1));
    }
}
