//! A task's output as timed lines (`TaskLogsRequest.lines`), what `docker service logs` needs
//! for `--timestamps`, `--since` and `--tail`: each line of both log files with the time its
//! stamps give it (see `log_stamps`), the two streams merged in time order, filtered, then
//! (when following) the lines written afterwards, until `until` or the receiver goes.

use std::{path::PathBuf, time::Duration};

use tokio::sync::mpsc;
use tonic::Status;

use super::log_stamps::{self, Clock};
use crate::api::{LogChunk, TaskLogsRequest};

/// How often a followed log is checked for new output.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
/// A line longer than this is sent in pieces of this size (as dockerd's json-file driver
/// splits at 16 KiB).
const MAX_LINE: usize = 16 * 1024;

/// One line (with its newline, except a last unterminated one).
struct Line {
    stream: &'static str,
    data: Vec<u8>,
    nanos: i64,
}

/// One log file, read up to `offset`.
struct Source {
    stream: &'static str,
    path: PathBuf,
    offset: u64,
    clock: Clock,
    /// An unterminated line read so far, and the offset it starts at.
    partial: Vec<u8>,
    partial_at: u64,
}

impl Source {
    fn new(stream: &'static str, path: PathBuf) -> Source {
        Source {
            stream,
            path,
            offset: 0,
            clock: Clock::new(Vec::new(), 0),
            partial: Vec::new(),
            partial_at: 0,
        }
    }

    /// The complete lines written since the last call (and, with `flush`, an unterminated
    /// last one).
    async fn read_new(&mut self, flush: bool) -> Vec<Line> {
        let mut lines = Vec::new();
        let Ok(file) = std::fs::File::open(&self.path) else {
            return lines;
        };
        let size = file.metadata().map_or(0, |m| m.len());
        if size > self.offset {
            // Stamps first: the ones read cover at most what the data read below holds.
            self.clock.extend(log_stamps::read(&self.path));
            self.clock.set_beyond(log_stamps::modified_nanos(&file));
            let Ok(data) = read_from(&self.path, self.offset).await else {
                return lines;
            };
            let mut start = self.offset;
            self.offset += data.len() as u64;
            if self.partial.is_empty() {
                self.partial_at = start;
            }
            for byte in data {
                self.partial.push(byte);
                start += 1;
                if byte == b'\n' || self.partial.len() == MAX_LINE {
                    let at = self.partial_at;
                    lines.push(self.line(at));
                    self.partial_at = start;
                }
            }
        }
        if flush && !self.partial.is_empty() {
            let at = self.partial_at;
            lines.push(self.line(at));
        }
        lines
    }

    fn line(&mut self, at: u64) -> Line {
        Line {
            stream: self.stream,
            data: std::mem::take(&mut self.partial),
            nanos: self.clock.time_of(at),
        }
    }
}

async fn read_from(path: &PathBuf, offset: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).await?;
    Ok(data)
}

/// Sends the task's lines as `request` asks, until done or the receiver goes.
pub async fn send(
    stdout: PathBuf,
    stderr: PathBuf,
    request: TaskLogsRequest,
    tx: mpsc::Sender<Result<LogChunk, Status>>,
) {
    let since = request.since_unix_nanos;
    let until = request.until_unix_nanos;
    let in_range = |nanos: i64| nanos >= since && (until <= 0 || nanos < until);
    let mut sources = [Source::new("stdout", stdout), Source::new("stderr", stderr)];
    let mut history = Vec::new();
    for source in &mut sources {
        // An unterminated last line is complete for a reader that does not follow.
        history.extend(source.read_new(!request.follow).await);
    }
    history.retain(|l| in_range(l.nanos));
    // Stable: at equal times stdout comes first, each stream in its own order.
    history.sort_by_key(|l| l.nanos);
    if let Some(tail) = request.tail {
        let keep = usize::try_from(tail).unwrap_or(usize::MAX);
        history.drain(..history.len().saturating_sub(keep));
    }
    for line in history {
        if !deliver(&tx, line).await {
            return;
        }
    }
    if !request.follow {
        return;
    }
    loop {
        if tx.is_closed() {
            return;
        }
        if until > 0 && now_nanos() >= until {
            return;
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
        let mut new = Vec::new();
        for source in &mut sources {
            new.extend(source.read_new(false).await);
        }
        new.sort_by_key(|l| l.nanos);
        for line in new.into_iter().filter(|l| in_range(l.nanos)) {
            if !deliver(&tx, line).await {
                return;
            }
        }
    }
}

async fn deliver(tx: &mpsc::Sender<Result<LogChunk, Status>>, line: Line) -> bool {
    let chunk = LogChunk {
        stream: line.stream.into(),
        data: line.data,
        time_unix_nanos: line.nanos,
    };
    tx.send(Ok(chunk)).await.is_ok()
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
