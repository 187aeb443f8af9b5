//! systemd's readiness protocol (`sd_notify(3)`): state lines sent as one datagram to the
//! unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//!
//! A `Type=notify` unit is "started" when `READY=1` arrives: the agent sends it once its API
//! socket is bound and the data path is loaded, and `STOPPING=1` when a signal stops it.
//! Without `$NOTIFY_SOCKET` (not run by systemd) every call does nothing. Written by hand: the
//! protocol is one `sendto`, not worth a dependency.

use std::{
    io,
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram},
    },
};

use shoal_control::error_chain::Chain;
use tracing::warn;

/// Where systemd listens, read once at start.
pub struct Notifier {
    addr: Option<SocketAddr>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; an unusable value is logged once and ignored.
    pub fn from_env() -> Notifier {
        let addr = std::env::var_os("NOTIFY_SOCKET").and_then(|value| {
            parse_addr(value.as_encoded_bytes())
                .inspect_err(|e| warn!(error = %Chain(e), "ignoring NOTIFY_SOCKET"))
                .ok()
        });
        Notifier { addr }
    }

    /// The service is up: the API socket is bound, the data path loaded.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// The service is stopping (a signal arrived).
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping\n");
    }

    fn send(&self, message: &str) {
        let Some(addr) = &self.addr else {
            return;
        };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(message.as_bytes(), addr));
        if let Err(e) = sent {
            warn!(error = %Chain(&e), "telling systemd (NOTIFY_SOCKET)");
        }
    }
}

/// `/path/to/socket` or `@abstract-name`, as systemd sets it.
fn parse_addr(value: &[u8]) -> io::Result<SocketAddr> {
    match value {
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        [b'/', ..] => {
            let path = std::str::from_utf8(value)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            SocketAddr::from_pathname(path)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path or an @abstract name",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            addr: Some(parse_addr(path.to_str().expect("utf-8").as_bytes()).expect("addr")),
        };
        notifier.ready("serving");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("recv");
        let text = std::str::from_utf8(&buf[..n]).expect("utf-8");
        assert!(text.starts_with("READY=1\nSTATUS=serving\n"), "{text:?}");
    }

    #[test]
    fn abstract_names_and_bad_values() {
        let name = format!("shoal-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).expect("name"))
                .expect("bind");
        let notifier = Notifier {
            addr: Some(parse_addr(format!("@{name}").as_bytes()).expect("addr")),
        };
        notifier.stopping();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=stopping\n");
        assert!(parse_addr(b"relative/path").is_err());
        assert!(parse_addr(b"").is_err());
    }
}
