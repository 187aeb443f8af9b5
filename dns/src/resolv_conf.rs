//! The host's resolv.conf, read for its upstream servers, and the task's, written from it.
//!
//! A task's resolv.conf points at the embedded server (127.0.0.11) and keeps the host's search
//! domains and options, as Docker does; the host's nameservers become the embedded server's
//! upstreams. Loopback upstreams (systemd-resolved's 127.0.0.53) are unreachable from a task's
//! namespace but reachable from the agent, which is where forwarding happens.

use std::net::{IpAddr, SocketAddr};

/// Address of the embedded DNS server inside every task.
pub const EMBEDDED_DNS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11));

/// What shoal takes from a resolv.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, port 53, in file order.
    pub nameservers: Vec<SocketAddr>,
    /// `search` (or the older `domain`) domains; the last such line wins, as in glibc.
    pub search: Vec<String>,
    /// `options` tokens, in file order.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text. Unknown keywords and malformed nameservers are skipped, as
    /// glibc skips them; nothing here can fail.
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // glibc accepts a scope suffix on link-local v6 (fe80::1%eth0); we drop it.
                    if let Some(Ok(ip)) = words
                        .next()
                        .map(|w| w.split('%').next().unwrap_or(w).parse::<IpAddr>())
                    {
                        conf.nameservers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("search") | Some("domain") => {
                    conf.search = words.map(str::to_string).collect();
                }
                Some("options") => conf.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        conf
    }

    /// The resolv.conf a task gets: the embedded server, then the host's search and options.
    pub fn for_task(&self) -> String {
        let mut out = format!("nameserver {EMBEDDED_DNS}\n");
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_servers_search_and_options() {
        let conf = ResolvConf::parse(
            "# comment\nnameserver 10.1.2.3\nnameserver fe80::1%eth0\nnameserver bogus\n\
             domain old.example\nsearch a.example b.example ; trailing\noptions ndots:2 edns0\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "10.1.2.3:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(conf.search, vec!["a.example", "b.example"]);
        assert_eq!(conf.options, vec!["ndots:2", "edns0"]);
    }

    #[test]
    fn task_file_points_at_embedded_server_and_keeps_search() {
        let conf = ResolvConf::parse("nameserver 1.1.1.1\nsearch corp.example\noptions ndots:1\n");
        assert_eq!(
            conf.for_task(),
            "nameserver 127.0.0.11\nsearch corp.example\noptions ndots:1\n"
        );
        assert_eq!(ResolvConf::parse("").for_task(), "nameserver 127.0.0.11\n");
    }
}
