//! The benchmark's clients: threads that send requests through one target (a node's published
//! port, or the VIP from the client task), by new connections or kept-alive ones, and count
//! what fails and how.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};
use shoal_tests::task_net::in_netns;

use super::{KEEP_ALIVE_REQUESTS, REACH_TIMEOUT, REQUEST_TIMEOUT, SHOWN_ERRORS, SLOW};

/// Where a client sends its requests from, and to.
#[derive(Clone)]
pub(super) struct Target {
    /// `node1:8081`, `VIP`.
    pub(super) label: String,
    pub(super) netns: PathBuf,
    pub(super) addr: SocketAddr,
}

impl Target {
    /// Waits (bounded) until new connections through the target reach every task in `names`.
    pub(super) fn wait_reaches(&self, names: &BTreeSet<String>) -> anyhow::Result<()> {
        let deadline = Instant::now() + REACH_TIMEOUT;
        let mut seen = BTreeSet::new();
        let mut last = String::new();
        while Instant::now() < deadline {
            match in_netns(&self.netns, || one_request(self.addr, true)) {
                Ok(name) => {
                    seen.insert(name);
                    if names.is_subset(&seen) {
                        return Ok(());
                    }
                }
                Err(e) => {
                    last = e.to_string();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        bail!(
            "{} ({}) reached {seen:?} of {names:?} in {REACH_TIMEOUT:?} (last error: {last})",
            self.label,
            self.addr
        )
    }
}

/// Why a request failed.
#[derive(Debug)]
pub(super) enum Failure {
    Connect(std::io::Error),
    Request(std::io::Error),
    Status(String),
}

impl Failure {
    /// The tally's bucket.
    pub(super) fn kind(&self) -> &'static str {
        let io_kind = |e: &std::io::Error| match e.kind() {
            ErrorKind::ConnectionRefused => "refused",
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                "reset"
            }
            ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout",
            ErrorKind::UnexpectedEof => "closed",
            _ => "other",
        };
        match self {
            Failure::Connect(e) if io_kind(e) == "timeout" => "connect timeout",
            Failure::Connect(e) | Failure::Request(e) => io_kind(e),
            Failure::Status(_) => "non-200",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Request(e) => write!(f, "request: {e}"),
            Failure::Status(line) => write!(f, "answer: {line}"),
        }
    }
}

pub(super) fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(Failure::Connect)?;
    let set = |stream: &TcpStream| {
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_nodelay(true)
    };
    set(&stream).map_err(Failure::Connect)?;
    Ok(stream)
}

/// `GET /` over a new connection (`Connection: close`); the task that answered.
pub(super) fn one_request(addr: SocketAddr, close: bool) -> Result<String, Failure> {
    let mut stream = connect(addr)?;
    get(&mut stream, close)
}

/// `GET /` on `stream`; the task that answered (whoami's `Name:`). With `close`, the request
/// asks the server to close, and the answer is read to the end of the stream, so that the
/// server closes first and the client keeps no TIME_WAIT socket (a reset after the whole
/// answer does not fail the request).
pub(super) fn get(stream: &mut TcpStream, close: bool) -> Result<String, Failure> {
    let request: &[u8] = if close {
        b"GET / HTTP/1.1\r\nHost: zd\r\nConnection: close\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: zd\r\n\r\n"
    };
    stream.write_all(request).map_err(Failure::Request)?;
    let mut answer = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let (status, body) = loop {
        let n = stream.read(&mut chunk).map_err(Failure::Request)?;
        if n == 0 {
            return Err(Failure::Request(ErrorKind::UnexpectedEof.into()));
        }
        answer.extend_from_slice(&chunk[..n]);
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&answer[..end]);
        let length = head
            .lines()
            .find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        let body = &answer[end + 4..];
        if body.len() >= length {
            let status = head.lines().next().unwrap_or_default().to_string();
            break (
                status,
                String::from_utf8_lossy(&body[..length]).into_owned(),
            );
        }
    };
    if close {
        while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {}
    }
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(Failure::Status(status));
    }
    let name = body.lines().find_map(|l| l.strip_prefix("Name: "));
    Ok(name.unwrap_or_default().to_string())
}

/// What one client thread saw.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) sent: u64,
    pub(super) failed: u64,
    /// Answered, but only after [`SLOW`] (a retransmitted SYN or a stall).
    pub(super) slow: u64,
    /// The longest a request took that was answered.
    pub(super) longest: Duration,
    pub(super) kinds: BTreeMap<&'static str, u64>,
    /// The first failures: when (since the load started) and what.
    pub(super) first: Vec<(Duration, String)>,
    /// Tasks that answered.
    pub(super) served: BTreeSet<String>,
}

/// The client threads: every target with new connections, and with keep-alive ones.
pub(super) struct Load {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) epoch: Instant,
    pub(super) threads: Vec<(String, JoinHandle<Counts>)>,
}

impl Load {
    pub(super) fn start(targets: &[Target], pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let mut threads = Vec::new();
        for target in targets {
            for keep_alive in [false, true] {
                let label = format!(
                    "{} {}",
                    target.label,
                    if keep_alive { "keep-alive" } else { "new" }
                );
                let (stop, target) = (stop.clone(), target.clone());
                let thread = std::thread::spawn(move || {
                    in_netns(&target.netns, || {
                        client(target.addr, keep_alive, &stop, epoch, pause)
                    })
                });
                threads.push((label, thread));
            }
        }
        Load {
            stop,
            epoch,
            threads,
        }
    }

    /// Stops the clients; their counts, summed.
    pub(super) fn finish(&mut self) -> anyhow::Result<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = Tally {
            ran: self.epoch.elapsed(),
            ..Tally::default()
        };
        for (label, thread) in self.threads.drain(..) {
            let counts = thread
                .join()
                .map_err(|_| anyhow!("client thread {label} panicked"))?;
            tally.sent += counts.sent;
            tally.failed += counts.failed;
            tally.slow += counts.slow;
            tally.longest = tally.longest.max(counts.longest);
            for (kind, n) in counts.kinds {
                *tally.kinds.entry(kind).or_default() += n;
            }
            tally.first.extend(
                counts
                    .first
                    .into_iter()
                    .map(|(at, what)| (at, format!("{label}: {what}"))),
            );
            tally.served.extend(counts.served);
            tally.clients.push((label, counts.sent, counts.failed));
        }
        tally.first.sort();
        tally.first.truncate(SHOWN_ERRORS);
        Ok(tally)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, thread) in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One client thread's loop, in the target's netns, until `stop`.
pub(super) fn client(
    addr: SocketAddr,
    keep_alive: bool,
    stop: &AtomicBool,
    epoch: Instant,
    pause: Duration,
) -> Counts {
    let mut counts = Counts::default();
    let mut kept: Option<(TcpStream, u32)> = None;
    while !stop.load(Ordering::Relaxed) {
        let at = epoch.elapsed();
        let result = if keep_alive {
            match kept
                .take()
                .map_or_else(|| connect(addr).map(|s| (s, 0)), Ok)
            {
                Ok((mut stream, used)) => {
                    let result = get(&mut stream, false);
                    if result.is_ok() && used + 1 < KEEP_ALIVE_REQUESTS {
                        kept = Some((stream, used + 1));
                    }
                    result
                }
                Err(e) => Err(e),
            }
        } else {
            one_request(addr, true)
        };
        counts.sent += 1;
        let took = epoch.elapsed() - at;
        match result {
            Ok(name) => {
                counts.slow += u64::from(took >= SLOW);
                counts.longest = counts.longest.max(took);
                if !counts.served.contains(&name) {
                    counts.served.insert(name);
                }
            }
            Err(e) => {
                counts.failed += 1;
                *counts.kinds.entry(e.kind()).or_default() += 1;
                if counts.first.len() < SHOWN_ERRORS {
                    counts.first.push((at, e.to_string()));
                }
            }
        }
        std::thread::sleep(pause);
    }
    counts
}

/// All client threads' counts.
#[derive(Default)]
pub(super) struct Tally {
    /// How long the clients ran.
    pub(super) ran: Duration,
    pub(super) sent: u64,
    pub(super) failed: u64,
    pub(super) slow: u64,
    pub(super) longest: Duration,
    pub(super) kinds: BTreeMap<&'static str, u64>,
    pub(super) first: Vec<(Duration, String)>,
    pub(super) served: BTreeSet<String>,
    /// Per client thread: label, sent, failed.
    pub(super) clients: Vec<(String, u64, u64)>,
}
