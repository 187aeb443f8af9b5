//! When a task may take traffic, and when a stopping one has none left: read from the
//! sockets of its own network namespace (`/proc/<pid>/net/{tcp,tcp6,udp,udp6}`), with no
//! user configuration.
//!
//! [`is_ready`] is the one place "ready" is decided: a task joins its service's backends (its
//! endpoint is published in the network DB) and is reported Running (Starting until then, as
//! swarmkit does for a task with a health check) only once it listens on each of its
//! service's target ports, or, when the service exposes no port shoal knows of, once it
//! listens on some TCP port or at the latest after [`NO_PORT_WAIT`]. A task with neither
//! network nor port has nothing to join and is ready at once. (Health checks, when they come,
//! decide here too: "healthy, if it has a check".) [`open_connections`] is what a draining task
//! is watched by before its stop signal.

use std::{collections::BTreeSet, fs, net::Ipv4Addr, time::Duration};

use shoal_control::cluster::{PortProtocol, Task};

/// How long a task of a service with no known port (no published port) runs before it joins
/// its service: enough for a program to bind, short enough not to slow a rolling update.
pub const NO_PORT_WAIT: Duration = Duration::from_secs(2);

/// `st` of a listening TCP socket in `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;
/// `st` of an established TCP socket.
const TCP_ESTABLISHED: u8 = 0x01;

/// May the task (its process `pid`, running for `running_for`) take traffic? See the module.
pub fn is_ready(task: &Task, pid: u32, running_for: Duration) -> bool {
    let ports = target_ports(task);
    if ports.is_empty() {
        return task.networks.is_empty()
            || running_for >= NO_PORT_WAIT
            || sockets(pid, "tcp")
                .iter()
                .any(|s| s.state == TCP_LISTEN && !s.loopback);
    }
    let tcp = sockets(pid, "tcp");
    let udp = sockets(pid, "udp");
    ports.iter().all(|(protocol, port)| match protocol {
        PortProtocol::Tcp => tcp
            .iter()
            .any(|s| s.state == TCP_LISTEN && s.local_port == *port && !s.loopback),
        // A bound UDP socket is ready to receive.
        PortProtocol::Udp => udp.iter().any(|s| s.local_port == *port && !s.loopback),
    })
}

/// The task's established TCP connections that clients opened to it: on its service's
/// target ports, or (no known port) on any port it listens on. Loopback connections (the
/// embedded DNS, the task talking to itself) do not count.
pub fn open_connections(task: &Task, pid: u32) -> usize {
    let tcp = sockets(pid, "tcp");
    let mut ports: BTreeSet<u16> = target_ports(task)
        .into_iter()
        .filter(|(protocol, _)| *protocol == PortProtocol::Tcp)
        .map(|(_, port)| port)
        .collect();
    if ports.is_empty() {
        ports = tcp
            .iter()
            .filter(|s| s.state == TCP_LISTEN && !s.loopback)
            .map(|s| s.local_port)
            .collect();
    }
    tcp.iter()
        .filter(|s| s.state == TCP_ESTABLISHED && !s.loopback && ports.contains(&s.local_port))
        .count()
}

/// The ports the task's service sends it traffic on: its published ports' targets.
fn target_ports(task: &Task) -> BTreeSet<(PortProtocol, u16)> {
    task.spec
        .ports
        .iter()
        .map(|p| (p.protocol, p.target))
        .collect()
}

/// One line of `/proc/net/{tcp,udp}[6]`, what matters of it.
#[derive(Debug, PartialEq, Eq)]
struct Socket {
    local_port: u16,
    state: u8,
    /// Bound to a loopback address.
    loopback: bool,
}

/// The sockets of `pid`'s network namespace (v4 and v6) of `kind` (`tcp` or `udp`). A file
/// that cannot be read (the process is gone, no IPv6) counts as no socket.
fn sockets(pid: u32, kind: &str) -> Vec<Socket> {
    let mut found = Vec::new();
    for suffix in ["", "6"] {
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{kind}{suffix}")) {
            found.extend(text.lines().skip(1).filter_map(parse_line));
        }
    }
    found
}

/// `  0: 0100007F:0035 00000000:0000 0A ...`: local address:port (hex), remote, state.
fn parse_line(line: &str) -> Option<Socket> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    let (addr, port) = local.split_once(':')?;
    Some(Socket {
        local_port: u16::from_str_radix(port, 16).ok()?,
        state: u8::from_str_radix(state, 16).ok()?,
        loopback: is_loopback(addr),
    })
}

/// The kernel prints a v4 address as the `u32` in host order (little-endian here), a v6 one
/// as four such words.
fn is_loopback(hex: &str) -> bool {
    match hex.len() {
        8 => u32::from_str_radix(hex, 16)
            .is_ok_and(|raw| Ipv4Addr::from(raw.to_le_bytes()).is_loopback()),
        // ::1, and ::ffff:127.x.y.z (its last word printed like a v4 address).
        32 => {
            hex == "00000000000000000000000001000000"
                || (hex.starts_with("0000000000000000FFFF0000") && is_loopback(&hex[24..]))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_lines() {
        let listen = "   0: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(
            parse_line(listen),
            Some(Socket {
                local_port: 53,
                state: TCP_LISTEN,
                loopback: true
            })
        );
        let est = "   1: 0500000A:0050 0700000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1";
        assert_eq!(
            parse_line(est),
            Some(Socket {
                local_port: 80,
                state: TCP_ESTABLISHED,
                loopback: false
            })
        );
        let any6 = "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0";
        assert_eq!(
            parse_line(any6).map(|s| (s.local_port, s.loopback)),
            Some((8080, false))
        );
        let lo6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0";
        assert_eq!(parse_line(lo6).map(|s| s.loopback), Some(true));
        assert_eq!(parse_line("  sl  local_address rem_address   st"), None);
    }
}
