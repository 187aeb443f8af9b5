//! The embedded DNS server (127.0.0.11:53 in every task) against dnsmasq and unbound, and how
//! fast its records follow the cluster.
//!
//! Queries per second and latency: a 1-node swarm runs `web` (10 replicas, vip) and `rr`
//! (5 replicas, dnsrr) on an overlay network. Inside one task's network namespace, dnsmasq
//! (127.0.0.12) and unbound (127.0.0.13) serve the same names, from local records, that shoal
//! answers from the network DB, and dnsperf, also in that namespace, measures the three back to
//! back with the same query file and client settings, round after round.
//!
//! Record propagation: a 3-node swarm (1 manager) scales `web` up and down. A task on node1
//! polls `tasks.web` every millisecond while `bridge monitor fdb` follows node1's sandbox: the
//! FDB entry of a remote task and its DNS record both follow the same network DB event, so
//! their time difference is what the DNS path adds on top of the network DB.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use shoal_tests::{
    Cluster,
    task_net::{in_netns, sandbox_netns, task_netns},
};

use crate::support::{
    Placed, cli, create_whoami, median, network_id, nsenter, output, running, version, vip,
};

/// Rounds of the three servers back to back; every number is the median over rounds.
const ROUNDS: usize = 3;
/// Saturation run: dnsperf with this many clients, no rate limit, for this long.
const SATURATE_SECONDS: u32 = 5;
const CLIENTS: u32 = 4;
/// Latency run: a fixed rate well under every server's capacity, each answer's latency
/// reported by dnsperf (`-v`).
const FIXED_QPS: u32 = 2_000;
const FIXED_SECONDS: u32 = 4;
/// How long the agent's CPU use at rest is sampled before the runs.
const IDLE_SAMPLE: Duration = Duration::from_secs(3);
/// Serial run: our own client, one query in flight at a time: the round trip with no queueing.
const SERIAL_SECONDS: u32 = 2;

const NETWORK: &str = "bench_net";
const WEB_REPLICAS: usize = 10;
const RR_REPLICAS: usize = 5;
const WHOAMI_PORT: &str = "8080";

const SHOAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const DNSMASQ: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);
const UNBOUND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 13);
const SERVERS: [(&str, Ipv4Addr); 3] =
    [("shoal", SHOAL), ("dnsmasq", DNSMASQ), ("unbound", UNBOUND)];
/// The peers' TTL, as shoal's.
const TTL: u32 = 600;

/// Propagation: `web` is scaled between these, one task per node at the low end.
const PROPAGATION_LOW: usize = 3;
const PROPAGATION_HIGH: usize = 9;
const PROPAGATION_ROUNDS: usize = 3;
const POLL: Duration = Duration::from_millis(1);

/// Bound on every wait (tasks running, records answered, a scale converging).
const TIMEOUT: Duration = Duration::from_secs(60);
/// After DNS shows the new set, how long FDB events of remote tasks are still awaited (the
/// agent also re-syncs sandboxes from the network DB every 5 s).
const FDB_GRACE: Duration = Duration::from_secs(10);

pub fn run() -> anyhow::Result<()> {
    print!(
        "{}",
        throughput().context("queries per second and latency")?
    );
    println!();
    print!("{}", propagation().context("record propagation")?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Queries per second and latency

/// One server's results in one round.
#[derive(Clone, Copy, Default)]
struct Round {
    /// Saturation run: answers per second, queries lost or answered other than NOERROR, and
    /// the server process's CPU time (share of one core, and per answered query).
    qps: f64,
    sat_bad: u64,
    cpu_percent: f64,
    cpu_us_per_query: f64,
    /// Context switches of the server's threads per answered query (saturation run).
    switches_per_query: f64,
    /// Fixed-rate run, in microseconds, and queries lost.
    avg_us: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    fixed_lost: u64,
    /// Serial run (our own client, one query in flight): answers per second, median round trip.
    serial_qps: f64,
    serial_p50_us: f64,
}

fn throughput() -> anyhow::Result<String> {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    cli(&cluster, 0, &["network", "create", NETWORK])?;
    create_whoami(
        &cluster,
        Some(NETWORK),
        "web",
        WEB_REPLICAS,
        WHOAMI_PORT,
        &[],
    )?;
    create_whoami(
        &cluster,
        Some(NETWORK),
        "rr",
        RR_REPLICAS,
        WHOAMI_PORT,
        &["--endpoint-mode", "dnsrr"],
    )?;
    let web = running(&cluster, "web", WEB_REPLICAS)?;
    let rr = running(&cluster, "rr", RR_REPLICAS)?;
    let network = network_id(&cluster, NETWORK)?;
    let vip = vip(&cluster, "web", &network)?;
    let zone = zone(&[("web", Some(vip), &web), ("rr", None, &rr)]);
    let asker = &web[0];
    let netns = task_netns(&cluster.nodes[asker.node].state_dir(), &asker.id);
    let agent = cluster.nodes[asker.node]
        .pid()
        .context("the agent is not running")?;

    let mut resolver = Resolver::new(&netns)?;
    wait_answers(&mut resolver, SHOAL, &zone, "shoal")?;
    let mut peers = Peers::start(&netns, &zone)?;
    wait_answers(&mut resolver, DNSMASQ, &zone, "dnsmasq").map_err(|e| peers.explain(e))?;
    wait_answers(&mut resolver, UNBOUND, &zone, "unbound").map_err(|e| peers.explain(e))?;
    let queries = peers.dir.join("queries.txt");
    let names: Vec<&str> = zone.keys().map(String::as_str).collect();
    let ticks = clock_ticks();
    // The agent's own background work, which its CPU time below includes.
    let before = Usage::of(agent, ticks)?;
    std::thread::sleep(IDLE_SAMPLE);
    let idle = Usage::of(agent, ticks)?.since(&before).cpu / IDLE_SAMPLE.as_secs_f64() * 100.0;

    let mut rounds: BTreeMap<&str, Vec<Round>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for (name, addr) in SERVERS {
            let pid = if name == "shoal" {
                agent
            } else {
                peers.pid(name)?
            };
            let round = measure(&netns, addr, pid, ticks, &queries, &names, &mut resolver)
                .with_context(|| format!("measuring {name}"))
                .map_err(|e| peers.explain(e))?;
            rounds.entry(name).or_default().push(round);
        }
    }
    // The embedded server must still answer everything right after being flooded.
    wait_answers(&mut resolver, SHOAL, &zone, "shoal, after the runs")?;
    peers.check().map_err(|e| peers.explain(e))?;
    let versions = [version("dnsmasq", "--version"), version("unbound", "-V")];
    let dnsperf = version("dnsperf", "-h");
    drop(peers);
    drop(cluster);

    let medians: BTreeMap<&str, Round> = rounds
        .iter()
        .map(|(name, rounds)| (*name, Round::median(rounds)))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dns: shoal's embedded server vs {} and {}, all in one task's netns on 1 node; {} names \
         ({NETWORK}: web x{WEB_REPLICAS} vip, rr x{RR_REPLICAS} dnsrr); {dnsperf}; median of \
         {ROUNDS} rounds",
        versions[0],
        versions[1],
        zone.len()
    );
    let _ = writeln!(
        out,
        "{:<16} {:>42} | {:>37} | {:>16}",
        "",
        format!("dnsperf, {CLIENTS} clients, no limit"),
        format!("dnsperf -v at {FIXED_QPS} qps"),
        "1 in flight"
    );
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>5} {:>6} {:>8} {:>11} | {:>6} {:>6} {:>6} {:>7} {:>7} | {:>7} {:>8}",
        "server",
        "qps",
        "bad",
        "CPU %",
        "CPU us/q",
        "switches/q",
        "avg us",
        "p50",
        "p99",
        "max",
        "lost",
        "qps",
        "p50 us"
    );
    let row = |name: &str, r: &Round, bad: String, lost: String, ratio: bool| {
        let p = if ratio { 2 } else { 1 };
        let q = if ratio { 2 } else { 0 };
        format!(
            "{name:<16} {:>8.q$} {bad:>5} {:>6.q$} {:>8.p$} {:>11.2} | {:>6.p$} {:>6.p$} {:>6.p$} \
             {:>7.q$} {lost:>7} | {:>7.q$} {:>8.p$}\n",
            r.qps,
            r.cpu_percent,
            r.cpu_us_per_query,
            r.switches_per_query,
            r.avg_us,
            r.p50_us,
            r.p99_us,
            r.max_us,
            r.serial_qps,
            r.serial_p50_us,
        )
    };
    for (name, _) in SERVERS {
        let r = medians.get(name).copied().unwrap_or_default();
        out.push_str(&row(
            name,
            &r,
            r.sat_bad.to_string(),
            r.fixed_lost.to_string(),
            false,
        ));
    }
    let shoal = medians.get("shoal").copied().unwrap_or_default();
    for peer in ["dnsmasq", "unbound"] {
        let p = medians.get(peer).copied().unwrap_or_default();
        let ratio = Round {
            qps: shoal.qps / p.qps,
            cpu_percent: shoal.cpu_percent / p.cpu_percent,
            cpu_us_per_query: shoal.cpu_us_per_query / p.cpu_us_per_query,
            switches_per_query: shoal.switches_per_query / p.switches_per_query,
            avg_us: shoal.avg_us / p.avg_us,
            p50_us: shoal.p50_us / p.p50_us,
            p99_us: shoal.p99_us / p.p99_us,
            max_us: shoal.max_us / p.max_us,
            serial_qps: shoal.serial_qps / p.serial_qps,
            serial_p50_us: shoal.serial_p50_us / p.serial_p50_us,
            ..Round::default()
        };
        out.push_str(&row(
            &format!("shoal / {peer}"),
            &ratio,
            String::new(),
            String::new(),
            true,
        ));
    }
    let _ = writeln!(
        out,
        "shoal's CPU is the whole agent's, which uses {idle:.1}% of a core at rest"
    );
    let goal = shoal.qps / medians.get("dnsmasq").map_or(f64::NAN, |d| d.qps);
    let _ = writeln!(
        out,
        "goal: shoal >= 1.5x dnsmasq qps: {goal:.2}x ({})",
        if goal >= 1.5 { "met" } else { "not met" }
    );
    let _ = writeln!(out, "per round (qps / p99 us / CPU us per query):");
    for (name, _) in SERVERS {
        let line: Vec<String> = rounds
            .get(name)
            .map(|rs| {
                rs.iter()
                    .map(|r| format!("{:.0} / {:.0} / {:.1}", r.qps, r.p99_us, r.cpu_us_per_query))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(out, "  {name:<8} {}", line.join(", "));
    }
    Ok(out)
}

impl Round {
    fn median(rounds: &[Round]) -> Round {
        let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        Round {
            qps: m(|r| r.qps),
            sat_bad: rounds.iter().map(|r| r.sat_bad).sum(),
            cpu_percent: m(|r| r.cpu_percent),
            cpu_us_per_query: m(|r| r.cpu_us_per_query),
            switches_per_query: m(|r| r.switches_per_query),
            avg_us: m(|r| r.avg_us),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            max_us: m(|r| r.max_us),
            fixed_lost: rounds.iter().map(|r| r.fixed_lost).sum(),
            serial_qps: m(|r| r.serial_qps),
            serial_p50_us: m(|r| r.serial_p50_us),
        }
    }
}

/// The three runs against one server (process `pid`, whose CPU time is read around the
/// saturation run).
fn measure(
    netns: &Path,
    server: Ipv4Addr,
    pid: u32,
    ticks: f64,
    queries: &Path,
    names: &[&str],
    resolver: &mut Resolver,
) -> anyhow::Result<Round> {
    let before = Usage::of(pid, ticks)?;
    let started = Instant::now();
    let saturated = dnsperf(
        netns,
        server,
        queries,
        &[
            "-c",
            &CLIENTS.to_string(),
            "-l",
            &SATURATE_SECONDS.to_string(),
        ],
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    let used = Usage::of(pid, ticks)?.since(&before);
    let sat = Stats::parse(&saturated)?;
    let answered = sat.completed.max(1) as f64;

    let fixed = dnsperf(
        netns,
        server,
        queries,
        &[
            "-c",
            "1",
            "-Q",
            &FIXED_QPS.to_string(),
            "-l",
            &FIXED_SECONDS.to_string(),
            "-v",
        ],
    )?;
    let stats = Stats::parse(&fixed)?;
    let (mut latencies, timed_out) = per_query_latencies(&fixed);
    if latencies.is_empty() {
        bail!("no latency reported at {FIXED_QPS} qps:\n{fixed}");
    }
    latencies.sort_by(f64::total_cmp);

    let (serial_qps, mut round_trips) = serial(resolver, server, names)?;
    round_trips.sort_by(f64::total_cmp);
    Ok(Round {
        qps: sat.qps,
        sat_bad: sat.lost + sat.completed.saturating_sub(sat.noerror),
        cpu_percent: used.cpu / elapsed * 100.0,
        cpu_us_per_query: used.cpu / answered * 1e6,
        switches_per_query: used.switches / answered,
        avg_us: latencies.iter().sum::<f64>() / latencies.len() as f64 * 1e6,
        p50_us: percentile(&latencies, 0.50) * 1e6,
        p99_us: percentile(&latencies, 0.99) * 1e6,
        max_us: latencies.last().copied().unwrap_or(f64::NAN) * 1e6,
        fixed_lost: stats.lost.max(timed_out),
        serial_qps,
        serial_p50_us: percentile(&round_trips, 0.50) * 1e6,
    })
}

/// Our own client, one query in flight (send, block on the answer, next name) for
/// `SERIAL_SECONDS`: answers per second and each round trip in seconds. Unlike `dnsperf -q 1`,
/// whose sender sleeps while its window is full, nothing here waits but the answer.
fn serial(
    resolver: &mut Resolver,
    server: Ipv4Addr,
    names: &[&str],
) -> anyhow::Result<(f64, Vec<f64>)> {
    let mut round_trips = Vec::new();
    let started = Instant::now();
    let limit = Duration::from_secs(SERIAL_SECONDS.into());
    for name in names.iter().cycle() {
        let sent = Instant::now();
        if sent - started >= limit {
            break;
        }
        resolver.lookup(server, name)?;
        round_trips.push(sent.elapsed().as_secs_f64());
    }
    let qps = round_trips.len() as f64 / started.elapsed().as_secs_f64();
    Ok((qps, round_trips))
}

/// What a process has used so far: CPU time (user + system, all threads, exited ones
/// included), and context switches, voluntary or not, of its live threads.
struct Usage {
    cpu: f64,
    switches: f64,
}

impl Usage {
    fn of(pid: u32, ticks: f64) -> anyhow::Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start at field 3; utime is 14,
        // stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(n - 3)
                .with_context(|| format!("/proc/{pid}/stat: no field {n}"))?
                .parse::<f64>()?)
        };
        let mut switches = 0.0;
        for thread in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            let status = std::fs::read_to_string(thread.path().join("status")).unwrap_or_default();
            switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum::<f64>();
        }
        Ok(Usage {
            cpu: (field(14)? + field(15)?) / ticks,
            switches,
        })
    }

    fn since(&self, before: &Usage) -> Usage {
        Usage {
            cpu: self.cpu - before.cpu,
            switches: self.switches - before.switches,
        }
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// dnsperf in `netns` against `server`, returning its report.
fn dnsperf(
    netns: &Path,
    server: Ipv4Addr,
    queries: &Path,
    args: &[&str],
) -> anyhow::Result<String> {
    let out = output(
        nsenter(netns, "dnsperf")
            .args(["-s", &server.to_string(), "-d"])
            .arg(queries)
            .args(["-t", "1"])
            .args(args)
            .stdin(Stdio::null()),
    )
    .context("is dnsperf installed? run scripts/setup.sh")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The summary dnsperf prints at the end.
struct Stats {
    completed: u64,
    lost: u64,
    noerror: u64,
    qps: f64,
}

impl Stats {
    fn parse(report: &str) -> anyhow::Result<Stats> {
        let field = |label: &str| {
            report
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .and_then(|rest| rest.split_whitespace().next())
                .with_context(|| format!("no {label:?} in dnsperf's report:\n{report}"))
        };
        let noerror = report
            .lines()
            .find_map(|l| l.trim().strip_prefix("Response codes:"))
            .and_then(|codes| {
                let words: Vec<&str> = codes.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "NOERROR")?;
                words.get(at + 1)?.parse().ok()
            })
            .unwrap_or(0);
        Ok(Stats {
            completed: field("Queries completed:")?.parse()?,
            lost: field("Queries lost:")?.parse()?,
            noerror,
            qps: field("Queries per second:")?.parse()?,
        })
    }
}

/// Seconds per answered query from `dnsperf -v` (`> NOERROR web A 0.000123`), and how many
/// timed out (`> T web A`).
fn per_query_latencies(report: &str) -> (Vec<f64>, u64) {
    let mut latencies = Vec::new();
    let mut timed_out = 0;
    for line in report.lines().filter_map(|l| l.strip_prefix("> ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"T") {
            timed_out += 1;
        } else if let Some(seconds) = words.last().and_then(|w| w.parse::<f64>().ok()) {
            latencies.push(seconds);
        }
    }
    (latencies, timed_out)
}

/// Every name shoal answers for the services, and its addresses: `web` (the VIP), `tasks.web`,
/// `rr` and `tasks.rr` (task IPs), and each task's `<service>.<slot>` and full name.
type Zone = BTreeMap<String, BTreeSet<Ipv4Addr>>;

fn zone(services: &[(&str, Option<Ipv4Addr>, &[Placed])]) -> Zone {
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
fn wait_answers(
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
struct Peers {
    dir: PathBuf,
    children: Vec<(&'static str, Child)>,
}

impl Peers {
    fn start(netns: &Path, zone: &Zone) -> anyhow::Result<Peers> {
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

    fn pid(&self, name: &str) -> anyhow::Result<u32> {
        self.children
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, child)| child.id())
            .with_context(|| format!("{name} was not started"))
    }

    /// An error if a peer has exited.
    fn check(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited: {status}");
            }
        }
        Ok(())
    }

    /// `e`, with the peers' logs if one of them has exited.
    fn explain(&mut self, e: anyhow::Error) -> anyhow::Error {
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

// ---------------------------------------------------------------------------------------------
// Record propagation

/// One scale of `web` as node1 saw it.
struct Phase {
    /// From `service scale` to `tasks.web` answering the full new set.
    dns: Duration,
    /// From `service scale` to the last FDB change of a remote task.
    fdb: Option<Duration>,
    /// Per remote task added or removed: DNS change time minus FDB change time.
    lags: Vec<f64>,
    /// Remote tasks whose FDB change was never seen (within the grace period).
    missing_fdb: usize,
    /// DNS queries that failed (timeout, error rcode) while polling.
    failures: u64,
}

fn propagation() -> anyhow::Result<String> {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    cli(&cluster, 0, &["network", "create", NETWORK])?;
    create_whoami(
        &cluster,
        Some(NETWORK),
        "web",
        PROPAGATION_LOW,
        WHOAMI_PORT,
        &[],
    )?;
    let mut placed = running(&cluster, "web", PROPAGATION_LOW)?;
    let network = network_id(&cluster, NETWORK)?;
    let asker = placed
        .iter()
        .find(|t| t.node == 0)
        .cloned()
        .with_context(|| format!("no task of web on node1: {placed:?}"))?;
    let netns = task_netns(&cluster.nodes[0].state_dir(), &asker.id);
    let sandbox = sandbox_netns(&cluster.nodes[0].state_dir(), &network);
    let mut resolver = Resolver::new(&netns)?;
    wait_set(&mut resolver, &ips(&placed))?;
    let monitor = FdbMonitor::start(&sandbox)?;

    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..PROPAGATION_ROUNDS {
        for target in [PROPAGATION_HIGH, PROPAGATION_LOW] {
            let (phase, now) = scale(&cluster, &mut resolver, &monitor, &placed, target)?;
            placed = now;
            if target == PROPAGATION_HIGH {
                up.push(phase);
            } else {
                down.push(phase);
            }
        }
    }
    drop(monitor);
    drop(cluster);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "dns propagation: 3 nodes (1 manager), web scaled {PROPAGATION_LOW} <-> \
         {PROPAGATION_HIGH}, tasks.web polled every {POLL:?} from a task on node1, node1's FDB \
         followed with `bridge monitor fdb`; {PROPAGATION_ROUNDS} rounds"
    );
    let _ = writeln!(
        out,
        "{:<16} {:>15} {:>15} {:>26} {:>9}",
        "", "scale->DNS", "scale->FDB", "DNS - FDB, per remote task", "DNS"
    );
    let _ = writeln!(
        out,
        "{:<16} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9}",
        "", "p50", "max", "p50", "max", "p50", "max", "n", "failures"
    );
    for (name, phases) in [
        (format!("up {PROPAGATION_LOW} -> {PROPAGATION_HIGH}"), &up),
        (
            format!("down {PROPAGATION_HIGH} -> {PROPAGATION_LOW}"),
            &down,
        ),
    ] {
        let dns: Vec<f64> = phases.iter().map(|p| p.dns.as_secs_f64()).collect();
        let fdb: Vec<f64> = phases
            .iter()
            .filter_map(|p| p.fdb.map(|d| d.as_secs_f64()))
            .collect();
        let lags: Vec<f64> = phases.iter().flat_map(|p| p.lags.iter().copied()).collect();
        let missing: usize = phases.iter().map(|p| p.missing_fdb).sum();
        let failures: u64 = phases.iter().map(|p| p.failures).sum();
        let n = if missing > 0 {
            format!("{}+{missing}?", lags.len())
        } else {
            lags.len().to_string()
        };
        let _ = writeln!(
            out,
            "{name:<16} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {n:>8} {failures:>9}",
            secs(median(dns.clone())),
            secs(max(&dns)),
            secs(median(fdb.clone())),
            secs(max(&fdb)),
            millis(median(lags.clone())),
            millis(max(&lags)),
        );
    }
    let _ = writeln!(
        out,
        "(`n+k?`: k remote tasks changed in DNS with no FDB event seen within {FDB_GRACE:?})"
    );
    Ok(out)
}

/// Scales `web` to `target` and times node1's DNS answers and FDB; returns the phase and the
/// running tasks afterwards.
fn scale(
    cluster: &Cluster,
    resolver: &mut Resolver,
    monitor: &FdbMonitor,
    before: &[Placed],
    target: usize,
) -> anyhow::Result<(Phase, Vec<Placed>)> {
    let old: BTreeSet<Ipv4Addr> = ips(before);
    monitor.drain();
    let mut fdb_seen: HashMap<String, Instant> = HashMap::new();
    let mut dns_seen: HashMap<Ipv4Addr, Instant> = HashMap::new();
    let mut failures = 0;
    let grow = target > before.len();

    let started = Instant::now();
    cli(
        cluster,
        0,
        &["service", "scale", "--detach", &format!("web={target}")],
    )?;
    // Until DNS shows `target` addresses.
    let done = loop {
        let now = Instant::now();
        monitor.collect(grow, &mut fdb_seen);
        match resolver.lookup(SHOAL, "tasks.web") {
            Ok(set) => {
                let changed: Vec<Ipv4Addr> = if grow {
                    set.difference(&old).copied().collect()
                } else {
                    old.difference(&set).copied().collect()
                };
                for ip in changed {
                    dns_seen.entry(ip).or_insert(now);
                }
                if set.len() == target && (grow || set.is_subset(&old)) {
                    break now;
                }
            }
            Err(_) => failures += 1,
        }
        if now - started > TIMEOUT {
            bail!("tasks.web did not reach {target} addresses in {TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    };
    let after = running(cluster, "web", target)?;
    // The remote tasks that came or went, and the MAC their FDB entry carries.
    let changed: Vec<&Placed> = if grow {
        after.iter().filter(|t| !old.contains(&t.ip)).collect()
    } else {
        let now = ips(&after);
        before.iter().filter(|t| !now.contains(&t.ip)).collect()
    };
    let remote: Vec<&Placed> = changed.into_iter().filter(|t| t.node != 0).collect();
    let grace = Instant::now() + FDB_GRACE;
    while remote.iter().any(|t| !fdb_seen.contains_key(&mac_of(t.ip))) && Instant::now() < grace {
        std::thread::sleep(POLL);
        monitor.collect(grow, &mut fdb_seen);
    }
    let mut lags = Vec::new();
    let mut last_fdb = None::<Instant>;
    let mut missing_fdb = 0;
    for t in &remote {
        match (fdb_seen.get(&mac_of(t.ip)), dns_seen.get(&t.ip)) {
            (Some(fdb), Some(dns)) => {
                lags.push(signed_secs(*dns, *fdb));
                last_fdb = Some(last_fdb.map_or(*fdb, |l| l.max(*fdb)));
            }
            _ => missing_fdb += 1,
        }
    }
    let phase = Phase {
        dns: done - started,
        fdb: last_fdb.map(|l| l.saturating_duration_since(started)),
        lags,
        missing_fdb,
        failures,
    };
    Ok((phase, after))
}

/// Waits until `tasks.web` answers exactly `want`.
fn wait_set(resolver: &mut Resolver, want: &BTreeSet<Ipv4Addr>) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = resolver.lookup(SHOAL, "tasks.web");
        match &got {
            Ok(set) if set == want => return Ok(()),
            _ if Instant::now() > deadline => {
                bail!("tasks.web: {got:?} after {TIMEOUT:?}, expected {want:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `bridge monitor fdb` in a sandbox netns, each line stamped when read. Killed on drop.
struct FdbMonitor {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl FdbMonitor {
    fn start(sandbox: &Path) -> anyhow::Result<FdbMonitor> {
        let mut child = nsenter(sandbox, "bridge")
            .args(["monitor", "fdb"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bridge monitor fdb")?;
        let stdout = child.stdout.take().context("bridge monitor's stdout")?;
        let (tx, lines) = mpsc::channel();
        // Ends at EOF, when the monitor is killed.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(FdbMonitor { child, lines })
    }

    fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// Records the first time each MAC was added (`added`) or deleted on vxlan0 with a remote
    /// VTEP (`<mac> dev vxlan0 dst <ip> ...`, `Deleted <mac> dev vxlan0 dst ...`).
    fn collect(&self, added: bool, seen: &mut HashMap<String, Instant>) {
        while let Ok((at, line)) = self.lines.try_recv() {
            let (deleted, rest) = match line.strip_prefix("Deleted ") {
                Some(rest) => (true, rest),
                None => (false, line.as_str()),
            };
            if deleted == added || !rest.contains("dev vxlan0") || !rest.contains(" dst ") {
                continue;
            }
            if let Some(mac) = rest.split_whitespace().next() {
                seen.entry(mac.to_string()).or_insert(at);
            }
        }
    }
}

impl Drop for FdbMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The MAC shoal gives a task's interface (and its FDB entries): Docker's `02:42` + the IP.
fn mac_of(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

// ---------------------------------------------------------------------------------------------
// A minimal DNS client (A queries over UDP), for checking answers and polling

/// A UDP socket made inside a task's netns; queries go to any server in there.
struct Resolver {
    socket: UdpSocket,
    id: u16,
}

impl Resolver {
    fn new(netns: &Path) -> anyhow::Result<Resolver> {
        let socket = in_netns(netns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .with_context(|| format!("a UDP socket in {}", netns.display()))?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(Resolver { socket, id: 0 })
    }

    /// The A records of `name`; an error on a timeout or an RCODE other than NOERROR.
    fn lookup(&mut self, server: Ipv4Addr, name: &str) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
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

// ---------------------------------------------------------------------------------------------
// The cluster (the rest is in `support`)

fn ips(tasks: &[Placed]) -> BTreeSet<Ipv4Addr> {
    tasks.iter().map(|t| t.ip).collect()
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn max(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::max).unwrap_or(f64::NAN)
}

/// The value at quantile `q` of sorted `v`.
fn percentile(v: &[f64], q: f64) -> f64 {
    let at = ((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1));
    v.get(at).copied().unwrap_or(f64::NAN)
}

/// `a - b` in seconds, negative when `a` came first.
fn signed_secs(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64()
    } else {
        -(b - a).as_secs_f64()
    }
}

fn secs(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else {
        format!("{s:.2}s")
    }
}

fn millis(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else {
        format!("{:.1}ms", s * 1e3)
    }
}
