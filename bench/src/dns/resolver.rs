//! A minimal DNS client (A queries over UDP) in a task's netns, for checking answers and
//! polling.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use shoal_tests::task_net::in_netns;

/// A UDP socket made inside a task's netns; queries go to any server in there.
pub(super) struct Resolver {
    socket: UdpSocket,
    id: u16,
}

impl Resolver {
    pub(super) fn new(netns: &Path) -> anyhow::Result<Resolver> {
        let socket = in_netns(netns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .with_context(|| format!("a UDP socket in {}", netns.display()))?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(Resolver { socket, id: 0 })
    }

    /// The A records of `name`; an error on a timeout or an RCODE other than NOERROR.
    pub(super) fn lookup(
        &mut self,
        server: Ipv4Addr,
        name: &str,
    ) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
        self.id = self.id.wrapping_add(1);
        self.socket
            .send_to(&query(self.id, name), SocketAddr::new(server.into(), 53))?;
        let mut buf = [0u8; 4096];
        loop {
            let (n, _) = self
                .socket
                .recv_from(&mut buf)
                .with_context(|| format!("{name} A: no answer from {server}"))?;
            // Anything else is a late answer to an earlier query that timed out.
            if let Some((rcode, ips)) = buf.get(..n).and_then(|m| parse_a(m, self.id)) {
                if rcode != 0 {
                    bail!("{name} A: RCODE {rcode} from {server}");
                }
                return Ok(ips);
            }
        }
    }
}

/// A recursion-desired query for `name` A IN.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// RCODE and A records of the response to query `id`; `None` if it is not one.
fn parse_a(msg: &[u8], id: u16) -> Option<(u8, BTreeSet<Ipv4Addr>)> {
    let u16_at = |at: usize| Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]));
    if u16_at(0)? != id || msg.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = msg.get(3)? & 0x0f;
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut ips = BTreeSet::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let (rtype, len) = (u16_at(at)?, usize::from(u16_at(at + 8)?));
        let data = msg.get(at + 10..at + 10 + len)?;
        if let (1, &[a, b, c, d]) = (rtype, data) {
            ips.insert(Ipv4Addr::new(a, b, c, d));
        }
        at += 10 + len;
    }
    Some((rcode, ips))
}

/// The offset after the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}
