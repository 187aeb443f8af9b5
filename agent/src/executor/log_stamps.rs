//! The log stamper: one thread per executor that notes when each task's output was written
//! (`shoal_control::swarm::log_stamps`, where the format is), for `docker service logs
//! --timestamps`, `--since` and `--tail` in time order.
//!
//! Tasks write into their log files directly (see `spawn`), so this polls: every [`POLL`],
//! each known task's `stdout.log` and `stderr.log` that grew gets a record of the new bytes and
//! the file's modification time (when the last of them was written: lines written together
//! within one poll share it). A stat per file per poll is all an idle task costs.

use std::{
    collections::HashMap,
    io,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use shoal_control::swarm::log_stamps::{self, Stamp};
use tracing::debug;

use super::state::Inner;

/// How often the logs are looked at: how far apart lines may be and still share a time.
const POLL: Duration = Duration::from_millis(100);

pub fn start(inner: Arc<Inner>) -> io::Result<()> {
    thread::Builder::new()
        .name("log-stamper".to_owned())
        .spawn(move || run(&inner))?;
    Ok(())
}

fn run(inner: &Inner) {
    // How far each log is stamped; read from its stamps file the first time it is seen, so a
    // restarted agent goes on where the last one stopped.
    let mut stamped: HashMap<PathBuf, u64> = HashMap::new();
    while !inner.closed.load(Ordering::Acquire) {
        let logs: Vec<PathBuf> = {
            let state = inner.lock();
            state
                .tasks
                .values()
                .flat_map(|entry| [entry.dir.stdout_path(), entry.dir.stderr_path()])
                .collect()
        };
        // Forget tasks that are gone (their directories with them).
        stamped.retain(|path, _| logs.contains(path));
        for log in logs {
            let Ok(meta) = std::fs::metadata(&log) else {
                continue;
            };
            let size = meta.len();
            let from = *stamped
                .entry(log.clone())
                .or_insert_with(|| log_stamps::stamped_to(&log));
            if size <= from {
                continue;
            }
            // The file's modification time is when the last of the new bytes was written:
            // exact for output written at once, and it keeps two streams' lines in the order
            // the task wrote them whichever file this loop looks at first.
            let now = now_nanos();
            let written = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_nanos()).ok())
                .map_or(now, |m| m.min(now));
            let stamp = Stamp {
                from,
                to: size,
                nanos: written,
            };
            match log_stamps::append(&log, stamp) {
                Ok(()) => {
                    stamped.insert(log, size);
                }
                // Tried again at the next poll; the lines get a later time meanwhile.
                Err(e) => debug!("stamping {}: {e}", log.display()),
            }
        }
        thread::sleep(POLL);
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
