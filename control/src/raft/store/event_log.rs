//! [`EventLog`]: the swarm events this manager applied, for `docker events`: the last
//! [`KEPT`] in memory (what `--since` can reach back to) and a broadcast to every follower.
//!
//! Events are recorded under the same lock subscribers take to read the kept ones, so a
//! subscriber sees each event exactly once: in its history or on its channel, never both or
//! neither. They live in memory only: a restarted manager remembers none (dockerd's own event
//! log is in memory too).

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::broadcast;

use crate::cluster::events::Event;

/// How many events are kept for `since` (dockerd keeps 256; a swarm's are fewer per object).
pub const KEPT: usize = 1024;

/// How many events a slow follower may fall behind before it is cut off.
const BACKLOG: usize = 1024;

#[derive(Debug)]
pub struct EventLog {
    kept: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            live: broadcast::channel(BACKLOG).0,
        }
    }
}

/// What a subscriber gets: the kept events it asked for, then the live ones.
pub struct Subscription {
    pub history: Vec<Event>,
    pub live: broadcast::Receiver<Event>,
}

impl EventLog {
    /// Records events just applied, stamped now.
    pub fn record(&self, events: impl IntoIterator<Item = Event>) {
        let now = now_unix_nanos();
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        for mut event in events {
            // Never before the last one: a clock stepping back must not reorder `since`.
            event.time_unix_nanos = kept
                .back()
                .map_or(now, |last| now.max(last.time_unix_nanos));
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(event.clone());
            // No receiver is no error: nobody is following.
            let _ = self.live.send(event);
        }
    }

    /// The kept events at or after `since` (none when `None`) and a channel for what comes
    /// after them.
    pub fn subscribe(&self, since: Option<i64>) -> Subscription {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let history = match since {
            Some(since) => kept
                .iter()
                .filter(|e| e.time_unix_nanos >= since)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        Subscription {
            history,
            live: self.live.subscribe(),
        }
    }
}

fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            kind: "service",
            action: "create",
            id: id.to_string(),
            attributes: Vec::new(),
            time_unix_nanos: 0,
        }
    }

    #[test]
    fn history_then_live_each_event_once() {
        let log = EventLog::default();
        log.record([event("a"), event("b")]);
        let mut sub = log.subscribe(Some(0));
        log.record([event("c")]);
        let history: Vec<_> = sub.history.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(history, ["a", "b"]);
        assert_eq!(sub.live.try_recv().unwrap().id, "c");
        assert!(sub.live.try_recv().is_err());
        assert!(sub.history[0].time_unix_nanos <= sub.history[1].time_unix_nanos);
        assert!(
            log.subscribe(None).history.is_empty(),
            "no since: no history"
        );
        let last = log.subscribe(Some(0)).history[2].time_unix_nanos;
        assert_eq!(log.subscribe(Some(last + 1)).history.len(), 0);
    }

    #[test]
    fn keeps_the_last_only() {
        let log = EventLog::default();
        log.record((0..KEPT + 5).map(|i| event(&i.to_string())));
        let history = log.subscribe(Some(0)).history;
        assert_eq!(history.len(), KEPT);
        assert_eq!(history[0].id, "5");
    }
}
