//! The leader's view of which nodes are alive: the last heartbeat from each node. A node
//! silent for three heartbeat periods is Down.
//!
//! A manager that just became leader has not heard from anyone yet, so every node gets a grace
//! period counted from the moment of the leadership change ([`Liveness::became_leader`]).
//!
//! A node whose agent stops and leaves its tasks running (an upgrade, a restart) says so with a
//! last heartbeat: its tasks still serve, so it is not Down before [`STOPPING_GRACE`] has passed
//! (or three periods, if longer). A restarted agent is back well within it; a killed agent or a
//! cut link sends no such word and is Down after three periods as before.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::info;

use crate::{
    cluster::raft_id,
    raft::Raft,
    swarm::{Active, Swarm},
};

/// Heartbeat periods of silence after which a node is Down (Swarm's rule).
pub const MISSED_PERIODS: u32 = 3;

/// How long a node whose agent said it was stopping may stay silent before it is Down: Swarm's
/// own window with its default 5 s heartbeat, which users plan their restarts around.
pub const STOPPING_GRACE: Duration = Duration::from_secs(15);

/// A beat recorded this soon after a node's stop notice may have been sent before it (a beat
/// forwarded by another manager, or in flight, arrives after the notice): it shows the node
/// alive but does not end the grace, which only a beat of the restarted agent does. (Ending it
/// there made a node Down three periods after its notice, its task replaced mid-upgrade.)
const NOTICE_OVERTAKEN: Duration = Duration::from_secs(1);

impl Swarm {
    /// Notes that `node_id` is alive, or that its agent is stopping with its tasks left
    /// running (every manager does, not only the leader).
    pub(in crate::swarm) async fn record_heartbeat(
        &self,
        node_id: &str,
        agent_stopping: bool,
    ) -> Result<(), crate::swarm::error::Error> {
        let active = self.active().await?;
        if agent_stopping {
            info!(
                node_id,
                "the node's agent is stopping; its tasks keep running"
            );
            active.liveness.stopping(node_id);
        } else {
            active.liveness.record(node_id);
        }
        Ok(())
    }
}

pub struct Liveness {
    seen: Mutex<Seen>,
}

struct Seen {
    last: HashMap<String, Instant>,
    /// Nodes whose agent said it was stopping, and when they said it.
    stopping: HashMap<String, Instant>,
    /// No node is Down for silence before this: when this manager became leader.
    grace_from: Instant,
}

impl Liveness {
    pub fn new() -> Self {
        Liveness {
            seen: Mutex::new(Seen {
                last: HashMap::new(),
                stopping: HashMap::new(),
                grace_from: Instant::now(),
            }),
        }
    }

    pub fn record(&self, node_id: &str) {
        let mut seen = self.lock();
        if seen
            .stopping
            .get(node_id)
            .is_some_and(|notice| notice.elapsed() >= NOTICE_OVERTAKEN)
        {
            seen.stopping.remove(node_id);
        }
        seen.last.insert(node_id.to_string(), Instant::now());
    }

    /// `node_id`'s agent is stopping and leaves its tasks running (see the module's comment).
    pub fn stopping(&self, node_id: &str) {
        self.stopping_since(node_id, Instant::now());
    }

    fn stopping_since(&self, node_id: &str, notice: Instant) {
        let mut seen = self.lock();
        seen.last.insert(node_id.to_string(), notice);
        seen.stopping.insert(node_id.to_string(), notice);
    }

    pub fn became_leader(&self) {
        self.lock().grace_from = Instant::now();
    }

    /// Time since `node_id` was last heard from (or since the grace period began).
    pub fn silence(&self, node_id: &str) -> Duration {
        let seen = self.lock();
        let last = seen
            .last
            .get(node_id)
            .copied()
            .map_or(seen.grace_from, |t| t.max(seen.grace_from));
        last.elapsed()
    }

    /// A poisoned lock only means a panic elsewhere mid-update; the times are still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Silent for three periods, and not within the grace of a stop it announced. The grace
    /// counts from the announcement, so that a manager which never heard the node come back
    /// (beats go to the leader only) holds it for no longer when it becomes leader itself.
    pub fn is_down(&self, node_id: &str, period: Duration) -> bool {
        let stopping_since = self.lock().stopping.get(node_id).copied();
        let in_grace = stopping_since.is_some_and(|at| at.elapsed() <= STOPPING_GRACE);
        !in_grace && self.silence(node_id) > period * MISSED_PERIODS
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

/// On managers: notices when this node becomes leader, to give every node a fresh grace
/// period before it can be declared Down.
pub async fn watch_leadership(
    swarm: Swarm,
    active: Arc<Active>,
    raft: Raft,
    mut stop: watch::Receiver<bool>,
) {
    let me = raft_id(swarm.config().node_id.as_str());
    let mut metrics = raft.metrics();
    let mut leading = false;
    loop {
        let now_leading = metrics.borrow().current_leader == Some(me);
        if now_leading && !leading {
            info!("this node is now the raft leader");
            active.liveness.became_leader();
        }
        leading = now_leading;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_nodes_go_down_after_three_periods_with_grace_for_new_leaders() {
        let liveness = Liveness::new();
        let period = Duration::from_millis(10);
        liveness.record("a");
        assert!(!liveness.is_down("a", period));
        assert!(!liveness.is_down("never-seen", period), "grace period");
        std::thread::sleep(period * (MISSED_PERIODS + 1));
        assert!(liveness.is_down("a", period));
        assert!(liveness.is_down("never-seen", period));
        liveness.became_leader();
        assert!(
            !liveness.is_down("a", period),
            "a new leader gives everyone grace"
        );
        liveness.record("a");
        assert!(!liveness.is_down("a", period));
    }

    #[test]
    fn a_node_whose_agent_is_stopping_gets_the_longer_grace_until_it_beats_again() {
        let liveness = Liveness::new();
        let period = Duration::from_millis(10);
        liveness.record("restarting");
        liveness.record("killed");
        liveness.stopping("restarting");
        // A beat it sent before its notice, recorded after it: the grace holds.
        liveness.record("restarting");
        std::thread::sleep(period * (MISSED_PERIODS + 1));
        assert!(liveness.is_down("killed", period));
        assert!(!liveness.is_down("restarting", period));

        // Back (its notice given long enough ago that this beat is the restarted agent's):
        // its next silence counts three periods again.
        let notice = Instant::now()
            .checked_sub(NOTICE_OVERTAKEN)
            .expect("an instant a second ago");
        liveness.stopping_since("restarting", notice);
        liveness.record("restarting");
        std::thread::sleep(period * (MISSED_PERIODS + 1));
        assert!(liveness.is_down("restarting", period));
    }
}
