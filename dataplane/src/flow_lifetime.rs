//! When a flow's conntrack entries may be forgotten, for VIP and published-port flows alike:
//! a closed TCP flow after a linger, a UDP flow after minutes of quiet, an open TCP flow never;
//! a published port's unconfirmed flow (its client never answered its task: a spoofed SYN)
//! within seconds; which entry is a flow's other half; and what vanished between two expiry
//! rounds without expiry (the LRU's evictions). Entries' stamps are read on the programs'
//! clock (`flow_clock`); the durations here are nanoseconds.

use std::collections::{HashMap, HashSet};

use shoal_common::lb::{FLOW_FIN, FLOW_FORWARD, FLOW_REPLY, FLOW_RST, FlowKey, FlowState};

use crate::flow_clock::FlowTime;

/// How long a closed TCP flow's entries stay (its last retransmitted FIN or ACK still finds
/// them), like a short TIME_WAIT.
pub const CLOSED_FLOW_LINGER: u64 = 10_000_000_000;
/// How long a UDP flow may be quiet before it is forgotten (its next datagram is balanced
/// again): UDP has no close to wait for.
pub const UDP_FLOW_IDLE: u64 = 300_000_000_000;

/// How long the client of an unconfirmed TCP flow (a published port's flow not yet in the
/// confirmed table, see `shoal_common::mesh`) may be quiet before the flow is forgotten: a
/// real client answers its task's SYN-ACK within a round trip, and retransmits its SYN after
/// 1, 2 and 4 s (RFC 6298), so 5 s forgets a spoofed SYN soon while a slow handshake keeps its
/// task. Conntrack's SYN_SENT state plays the same part.
pub const UNCONFIRMED_TCP_IDLE: u64 = 5_000_000_000;
/// As [`UNCONFIRMED_TCP_IDLE`] for UDP: a client that sent once (a query answered, or spoofed)
/// and not since. Conntrack's unreplied/unassured UDP timeout.
pub const UNCONFIRMED_UDP_IDLE: u64 = 30_000_000_000;

/// The other entry of a flow: the reply entry of a forward one (or the forward one of a
/// reply), or, for a task balanced onto itself, the forward entry of its server side.
pub(crate) fn partner(key: &FlowKey, state: &FlowState) -> FlowKey {
    let swapped_ports = FlowKey {
        src_port: key.dst_port,
        dst_port: key.src_port,
        ..*key
    };
    match key.direction {
        // client -> VIP, balanced onto the client itself: the server side's forward entry.
        FLOW_FORWARD if state.nat_ip == key.src_ip => swapped_ports,
        // client -> VIP: backend -> client.
        FLOW_FORWARD => FlowKey {
            src_ip: state.nat_ip,
            dst_ip: key.src_ip,
            direction: FLOW_REPLY,
            ..swapped_ports
        },
        // backend -> client (the state holds the VIP): client -> VIP.
        _ => FlowKey {
            src_ip: key.dst_ip,
            dst_ip: state.nat_ip,
            direction: FLOW_FORWARD,
            ..swapped_ports
        },
    }
}

/// Nanoseconds since either direction of the flow last saw a packet. Each stamp is converted
/// before they are compared: after an upgrade one entry may still hold an older agent's
/// nanosecond stamp, larger than any jiffies, while the other is stamped anew.
pub(crate) fn quiet_for(state: &FlowState, partner: Option<&FlowState>, now: FlowTime) -> u64 {
    let quiet = now.since(state.last_seen);
    partner.map_or(quiet, |p| quiet.min(now.since(p.last_seen)))
}

/// Whether a flow (its forward entry, and its partner if there is one) may be forgotten.
pub(crate) fn flow_is_over(
    proto: u8,
    forward: &FlowState,
    partner: Option<&FlowState>,
    now: FlowTime,
) -> bool {
    let quiet = quiet_for(forward, partner, now);
    if proto != 6 {
        return quiet >= UDP_FLOW_IDLE;
    }
    let flags = |s: Option<&FlowState>| s.map_or(0, |s| s.flags);
    let reset = (forward.flags | flags(partner)) & FLOW_RST != 0;
    let fin_both = forward.flags & FLOW_FIN != 0 && flags(partner) & FLOW_FIN != 0;
    (reset || fin_both) && quiet >= CLOSED_FLOW_LINGER
}

/// Whether an unconfirmed flow may be forgotten: its client (the forward entry, `last_seen`)
/// has been quiet for [`UNCONFIRMED_TCP_IDLE`] or [`UNCONFIRMED_UDP_IDLE`]. Its task's answers
/// do not count: a task retransmits its SYN-ACK to a spoofed client for a minute.
pub(crate) fn unconfirmed_is_over(proto: u8, client_last_seen: u64, now: FlowTime) -> bool {
    let idle = if proto == 6 {
        UNCONFIRMED_TCP_IDLE
    } else {
        UNCONFIRMED_UDP_IDLE
    };
    now.since(client_last_seen) >= idle
}

/// The keys of a flow table the last expiry round left in place, to tell at the next round
/// what vanished in between without expiry: what an LRU map evicted (it says nothing itself).
#[derive(Debug, Default)]
pub(crate) struct LeftInPlace {
    pub confirmed: HashSet<FlowKey>,
    pub unconfirmed: HashSet<FlowKey>,
    /// The programs' own removals from the confirmed table so far (a counter).
    pub forgotten: u64,
}

/// Entries evicted since the last round, by table (an estimate: entries made and evicted
/// within one round are not seen, and the programs' removals are subtracted by count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub confirmed: u64,
    pub unconfirmed: u64,
}

impl LeftInPlace {
    /// What went from each table since this was taken, other than by the programs: from the
    /// confirmed table, less what the programs removed (`forgotten_now` minus the count then);
    /// from the unconfirmed table, less what was confirmed (now in the confirmed table).
    pub(crate) fn evicted_since<V>(
        &self,
        confirmed: &HashMap<FlowKey, V>,
        unconfirmed: &HashMap<FlowKey, V>,
        forgotten_now: u64,
    ) -> Evicted {
        let gone = self
            .confirmed
            .iter()
            .filter(|k| !confirmed.contains_key(k))
            .count() as u64;
        let removed_by_programs = forgotten_now.saturating_sub(self.forgotten);
        let unconfirmed_gone = self
            .unconfirmed
            .iter()
            .filter(|k| !unconfirmed.contains_key(k) && !confirmed.contains_key(k))
            .count() as u64;
        Evicted {
            confirmed: gone.saturating_sub(removed_by_programs),
            unconfirmed: unconfirmed_gone,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::{
        CLOSED_FLOW_LINGER, Evicted, FlowState, FlowTime, LeftInPlace, UDP_FLOW_IDLE,
        UNCONFIRMED_TCP_IDLE, UNCONFIRMED_UDP_IDLE, partner,
    };
    use shoal_common::lb::{FLOW_FIN, FLOW_FORWARD, FLOW_REPLY, FLOW_RST, FlowKey};

    // The rules on a clock of one nanosecond a tick: stamps and now in nanoseconds.
    fn at(ns: u64) -> FlowTime {
        FlowTime {
            jiffies: ns,
            tick_ns: 1,
            monotonic_ns: ns,
        }
    }

    fn flow_is_over(proto: u8, f: &FlowState, p: Option<&FlowState>, now_ns: u64) -> bool {
        super::flow_is_over(proto, f, p, at(now_ns))
    }

    fn unconfirmed_is_over(proto: u8, last_seen: u64, now_ns: u64) -> bool {
        super::unconfirmed_is_over(proto, last_seen, at(now_ns))
    }

    #[test]
    fn a_flows_two_entries_name_each_other() {
        let (client, vip, backend) = (10, 254, 2);
        let forward = FlowKey {
            src_ip: client,
            dst_ip: vip,
            src_port: 40000,
            dst_port: 80,
            proto: 6,
            direction: FLOW_FORWARD,
            pad: [0; 2],
        };
        let to_backend = FlowState {
            nat_ip: backend,
            ..Default::default()
        };
        let reply = partner(&forward, &to_backend);
        assert_eq!(
            reply,
            FlowKey {
                src_ip: backend,
                dst_ip: client,
                src_port: 80,
                dst_port: 40000,
                direction: FLOW_REPLY,
                ..forward
            }
        );
        let from_vip = FlowState {
            nat_ip: vip,
            ..Default::default()
        };
        assert_eq!(partner(&reply, &from_vip), forward);
        // Balanced onto itself: the server side's forward entry, and back.
        let to_self = FlowState {
            nat_ip: client,
            ..Default::default()
        };
        let server_side = partner(&forward, &to_self);
        assert_eq!((server_side.src_port, server_side.dst_port), (80, 40000));
        assert_eq!(partner(&server_side, &to_self), forward);
    }

    fn seen(at: u64, flags: u32) -> FlowState {
        FlowState {
            last_seen: at,
            flags,
            ..Default::default()
        }
    }

    #[test]
    fn open_tcp_flows_are_never_over_however_quiet() {
        let year = 365 * 24 * 3600 * 1_000_000_000u64;
        assert!(!flow_is_over(6, &seen(0, 0), Some(&seen(0, 0)), year));
        // Half-closed is still open.
        assert!(!flow_is_over(
            6,
            &seen(0, FLOW_FIN),
            Some(&seen(0, 0)),
            year
        ));
    }

    #[test]
    fn closed_tcp_flows_linger_then_go() {
        let fin = |at| seen(at, FLOW_FIN);
        let t = 1_000;
        assert!(!flow_is_over(
            6,
            &fin(t),
            Some(&fin(t)),
            t + CLOSED_FLOW_LINGER - 1
        ));
        assert!(flow_is_over(
            6,
            &fin(t),
            Some(&fin(t)),
            t + CLOSED_FLOW_LINGER
        ));
        // The later direction counts.
        assert!(!flow_is_over(
            6,
            &fin(t),
            Some(&fin(t + 5)),
            t + CLOSED_FLOW_LINGER
        ));
        // A reset from either side closes it.
        assert!(flow_is_over(
            6,
            &seen(t, 0),
            Some(&seen(t, FLOW_RST)),
            t + CLOSED_FLOW_LINGER
        ));
        assert!(flow_is_over(
            6,
            &seen(t, FLOW_RST),
            None,
            t + CLOSED_FLOW_LINGER
        ));
    }

    #[test]
    fn udp_flows_go_after_minutes_of_quiet() {
        assert!(!flow_is_over(
            17,
            &seen(0, 0),
            Some(&seen(7, 0)),
            UDP_FLOW_IDLE
        ));
        assert!(flow_is_over(
            17,
            &seen(0, 0),
            Some(&seen(7, 0)),
            UDP_FLOW_IDLE + 7
        ));
    }

    #[test]
    fn a_flow_half_stamped_by_an_older_agent_counts_its_newer_half() {
        // Jiffies near 2^32 (a minute after boot at 250 Hz), CLOCK_MONOTONIC an hour on: the
        // reply entry still holds an older agent's nanosecond stamp from 20 minutes ago, the
        // forward entry a jiffies stamp from a second ago.
        let now = FlowTime {
            jiffies: 4_295_000_000,
            tick_ns: 4_000_000,
            monotonic_ns: 3_600_000_000_000,
        };
        let fresh = seen(now.jiffies - 250, 0);
        let old = seen(now.monotonic_ns - 1_200_000_000_000, 0);
        assert_eq!(super::quiet_for(&fresh, Some(&old), now), 1_000_000_000);
        assert_eq!(super::quiet_for(&old, Some(&fresh), now), 1_000_000_000);
        assert!(!super::flow_is_over(17, &fresh, Some(&old), now));
        assert!(super::flow_is_over(17, &old, None, now));
    }

    #[test]
    fn unconfirmed_flows_go_once_their_client_is_quiet_for_seconds() {
        let t = 1_000;
        assert!(!unconfirmed_is_over(6, t, t + UNCONFIRMED_TCP_IDLE - 1));
        assert!(unconfirmed_is_over(6, t, t + UNCONFIRMED_TCP_IDLE));
        assert!(!unconfirmed_is_over(17, t, t + UNCONFIRMED_TCP_IDLE));
        assert!(unconfirmed_is_over(17, t, t + UNCONFIRMED_UDP_IDLE));
    }

    #[test]
    fn what_vanished_without_expiry_counts_as_evicted() {
        let key = |port: u16| shoal_common::lb::FlowKey {
            src_port: port,
            ..Default::default()
        };
        let left = LeftInPlace {
            confirmed: HashSet::from([key(1), key(2), key(3)]),
            unconfirmed: HashSet::from([key(10), key(11), key(12)]),
            forgotten: 5,
        };
        // Confirmed: 2 and 3 went, one of them removed by the programs. Unconfirmed: 10 was
        // confirmed (now in the confirmed table), 11 went.
        let confirmed = HashMap::from([(key(1), ()), (key(10), ())]);
        let unconfirmed = HashMap::from([(key(12), ())]);
        assert_eq!(
            left.evicted_since(&confirmed, &unconfirmed, 6),
            Evicted {
                confirmed: 1,
                unconfirmed: 1
            }
        );
        assert_eq!(
            left.evicted_since(&confirmed, &unconfirmed, 9),
            Evicted {
                confirmed: 0,
                unconfirmed: 1
            },
            "never below zero"
        );
    }
}
