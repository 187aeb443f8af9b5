//! The names under test and their addresses, and the peers serving them: dnsmasq and unbound
//! started in a task's netns from local records.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{DNSMASQ, TIMEOUT, TTL, UNBOUND, resolver::Resolver};
use crate::support::{Placed, nsenter};

/// Every name shoal answers for the services, and its addresses: `web` (the VIP), `tasks.web`,
/// `rr` and `tasks.rr` (task IPs), and each task's `<service>.<slot>` and full name.
pub(super) type Zone = BTreeMap<String, BTreeSet<Ipv4Addr>>;

pub(super) fn zone(services: &[(&str, Option<Ipv4Addr>, &[Placed])]) -> Zone {
    let mut zone = Zone::new();
    for (service, vip, tasks) in services {
        if let Some(vip) = vip {
            zone.entry(service.to_string()).or_default().insert(*vip);
        }
        for t in *tasks {
            if vip.is_none() {
                zone.entry(service.to_string()).or_default().insert(t.ip);
            }
            zone.entry(format!("tasks.{service}"))
                .or_default()
                .insert(t.ip);
            zone.entry(format!("{service}.{}", t.slot))
                .or_default()
                .insert(t.ip);
            zone.entry(t.name.clone()).or_default().insert(t.ip);
        }
    }
    zone
}

/// Waits until `server` answers every name of `zone` with exactly its addresses.
pub(super) fn wait_answers(
    resolver: &mut Resolver,
    server: Ipv4Addr,
    zone: &Zone,
    who: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut wrong = Vec::new();
        for (name, want) in zone {
            match resolver.lookup(server, name) {
                Ok(got) if &got == want => {}
                Ok(got) => wrong.push(format!("{name}: {got:?}, expected {want:?}")),
                Err(e) => wrong.push(format!("{name}: {e:#}")),
            }
        }
        if wrong.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{who} ({server}) does not answer the service names after {TIMEOUT:?}: {}",
                wrong.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// dnsmasq and unbound in the task's netns, their files in a directory of their own; dropping
/// it (also on error or panic) kills them and removes the directory.
pub(super) struct Peers {
    pub(super) dir: PathBuf,
    children: Vec<(&'static str, Child)>,
}

impl Peers {
    pub(super) fn start(netns: &Path, zone: &Zone) -> anyhow::Result<Peers> {
        let dir = std::env::temp_dir().join(format!("shoal-bench-dns-{}", std::process::id()));
        let mut peers = Peers {
            dir: dir.clone(),
            children: Vec::new(),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

        let (mut hosts, mut local_data, mut queries) =
            (String::new(), String::new(), String::new());
        for (name, ips) in zone {
            for ip in ips {
                let _ = writeln!(hosts, "{ip} {name}");
                let _ = writeln!(local_data, "  local-data: \"{name}. {TTL} IN A {ip}\"");
            }
            let _ = writeln!(queries, "{name} A");
        }
        let write = |file: &str, text: &str| {
            std::fs::write(dir.join(file), text).with_context(|| format!("writing {file}"))
        };
        write("hosts", &hosts)?;
        write("queries.txt", &queries)?;
        write(
            "unbound.conf",
            &format!(
                "server:\n  interface: {UNBOUND}\n  port: 53\n  do-ip6: no\n  do-tcp: yes\n  \
                 num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  chroot: \"\"\n  \
                 username: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  do-daemonize: no\n  \
                 use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  module-config: \"iterator\"\n\
                 {local_data}remote-control:\n  control-enable: no\n",
                dir = dir.display()
            ),
        )?;

        // dnsmasq: one thread; answers hosts-file names from its cache, never forwards.
        let mut dnsmasq = nsenter(netns, "dnsmasq");
        dnsmasq
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
            ])
            .arg(format!("--listen-address={DNSMASQ}"))
            .args([
                "--port=53",
                "--cache-size=10000",
                &format!("--local-ttl={TTL}"),
            ])
            .arg(format!("--addn-hosts={}", dir.join("hosts").display()));
        peers.spawn("dnsmasq", &mut dnsmasq)?;
        let mut unbound = nsenter(netns, "unbound");
        unbound
            .args(["-d", "-p", "-c"])
            .arg(dir.join("unbound.conf"));
        peers.spawn("unbound", &mut unbound)?;
        Ok(peers)
    }

    fn spawn(&mut self, name: &'static str, command: &mut Command) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name} (is it installed? run scripts/setup.sh)"))?;
        self.children.push((name, child));
        Ok(())
    }

    pub(super) fn pid(&self, name: &str) -> anyhow::Result<u32> {
        self.children
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, child)| child.id())
            .with_context(|| format!("{name} was not started"))
    }

    /// An error if a peer has exited.
    pub(super) fn check(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited: {status}");
            }
        }
        Ok(())
    }

    /// `e`, with the peers' logs if one of them has exited.
    pub(super) fn explain(&mut self, e: anyhow::Error) -> anyhow::Error {
        if self.check().is_ok() {
            return e;
        }
        let logs: Vec<String> = self
            .children
            .iter()
            .map(|(name, _)| {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")));
                format!("{name}.log:\n{}", log.unwrap_or_default())
            })
            .collect();
        e.context(logs.join("\n"))
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
