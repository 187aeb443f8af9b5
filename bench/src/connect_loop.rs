//! The connection-rate client of the throughput benchmarks (`shoal-bench connect-loop`, run
//! by `WrkPeer` inside a peer's network namespace and cgroup): threads that each open a
//! connection, send one `GET /` with `Connection: close`, read the answer to its end, and
//! start again, for a given time.
//!
//! Why not wrk, as for keep-alive requests: wrk gives a thread one address, so the direct peer
//! (no load balancer) could only keep each thread on one backend, where a balancer sends a
//! thread's consecutive connections to different backends; that difference of shape alone
//! put every balancer, the socket balancer whose connections are the direct peer's own
//! included, 10-20% behind direct (bench/README.md, `vip-throughput`). Here every thread
//! cycles through its addresses: one address (the VIP, the published port) for a balancer;
//! the backends in turn, starting at the thread's index, for the direct peer, which is then
//! round robin's shape without the balancer.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// How long a connect, or a read of the answer, may take before the request counts as an
/// error (wrk's `--timeout 2s`, as the keep-alive rows use).
const TIMEOUT: Duration = Duration::from_secs(2);

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: shoal-bench\r\nConnection: close\r\n\r\n";

/// What one run did: answered requests (a 2xx status read to the end of the connection),
/// failed ones, and the seconds it ran.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
}

impl Tally {
    /// The line the client prints and `WrkPeer` reads back.
    fn line(&self) -> String {
        format!(
            "requests {} errors {} seconds {:.3}",
            self.requests, self.errors, self.seconds
        )
    }

    /// [`Tally::line`], read back.
    pub(crate) fn parse(line: &str) -> anyhow::Result<Tally> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["requests", requests, "errors", errors, "seconds", seconds] = words.as_slice() else {
            bail!("not a connect-loop tally: {line:?}");
        };
        Ok(Tally {
            requests: requests.parse()?,
            errors: errors.parse()?,
            seconds: seconds.parse()?,
        })
    }
}

/// `shoal-bench connect-loop SECONDS THREADS ADDRESS...`: runs the loop and prints its tally.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let [seconds, threads, addresses @ ..] = args else {
        bail!("usage: shoal-bench connect-loop SECONDS THREADS ADDRESS...");
    };
    let seconds: f64 = seconds.parse().context("SECONDS")?;
    let threads: usize = threads.parse().context("THREADS")?;
    let targets: Vec<SocketAddr> = addresses
        .iter()
        .map(|a| a.parse().with_context(|| format!("address {a:?}")))
        .collect::<anyhow::Result<_>>()?;
    if targets.is_empty() || threads == 0 {
        bail!("connect-loop needs an address and a thread");
    }
    println!(
        "{}",
        connect_loop(&targets, threads, Duration::from_secs_f64(seconds)).line()
    );
    Ok(())
}

/// `threads` threads, thread `i` connecting to `targets[(i + n) % len]` for its `n`th
/// connection, until `duration` has passed.
pub(crate) fn connect_loop(targets: &[SocketAddr], threads: usize, duration: Duration) -> Tally {
    let start = Instant::now();
    let deadline = start + duration;
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                scope.spawn(move || {
                    let mut tally = Tally::default();
                    let mut next = targets.iter().cycle().skip(i % targets.len());
                    while Instant::now() < deadline {
                        let Some(target) = next.next() else { break };
                        match one_request(*target) {
                            Ok(()) => tally.requests += 1,
                            Err(_) => tally.errors += 1,
                        }
                    }
                    tally
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    Tally {
        requests: tallies.iter().map(|t| t.requests).sum(),
        errors: tallies.iter().map(|t| t.errors).sum(),
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// One connection: connect, `GET /`, the answer read (to its `Content-Length`, else to the
/// end), then closed from this side, as wrk does (so the client's side holds the TIME_WAIT
/// sockets, as in the keep-alive rows' and the earlier runs' shape); a status other than 2xx
/// is an error.
fn one_request(target: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(REQUEST)?;
    let mut answer = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if complete(&answer) {
            break;
        }
    }
    if answer.starts_with(b"HTTP/1.1 2") || answer.starts_with(b"HTTP/1.0 2") {
        Ok(())
    } else {
        Err(std::io::Error::other("not a 2xx answer"))
    }
}

/// Whether `answer` holds a whole HTTP response with a `Content-Length`.
fn complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|length| answer.len() >= end + 4 + length)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn an_answer_is_complete_at_its_content_length() {
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no"));
        assert!(complete(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\n\r\nno length"));
    }

    #[test]
    fn the_tally_line_reads_back() {
        let tally = Tally {
            requests: 12,
            errors: 3,
            seconds: 4.5,
        };
        assert_eq!(Tally::parse(&tally.line()).unwrap(), tally);
        assert!(Tally::parse("Requests/sec: 12").is_err());
    }

    /// A server on loopback that answers `status` to every connection and closes it.
    fn server(status: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 512];
                let _ = stream.read(&mut buf);
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        addr
    }

    #[test]
    fn every_thread_cycles_through_the_addresses_and_counts_answers_and_failures() {
        let good = server("200 OK");
        let bad = server("503 Service Unavailable");
        let tally = connect_loop(&[good, bad], 2, Duration::from_millis(300));
        assert!(tally.requests > 0 && tally.errors > 0, "{tally:?}");
        // Each thread alternates, so answers and failures differ by at most one per thread.
        assert!(tally.requests.abs_diff(tally.errors) <= 2, "{tally:?}");
    }
}
