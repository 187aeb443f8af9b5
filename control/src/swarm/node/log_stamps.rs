//! When each part of a task's log was written: `<log>.stamps` beside each log file.
//!
//! A task writes its output straight into its log files (no pipe through the agent, so a task
//! outlives an agent restart), so nothing sees its lines as they are written. The agent's
//! executor polls the files instead and appends here, whenever a file has grown, one record
//! `FROM TO NANOS\n`: bytes `FROM..TO` of the log were written by `NANOS` (unix time: the
//! file's modification time then, when the last of them was written). A line's time is that
//! of the record holding its first byte: exact for a line written alone within a poll, late by
//! at most one poll for lines written with others.
//!
//! What this cannot know: output written while the agent was down is stamped when the agent
//! is back; output past the last record (written after the last poll) takes the file's
//! modification time, which is when its last byte was written.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

/// Bytes `from..to` of a log, written by `nanos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub from: u64,
    pub to: u64,
    pub nanos: i64,
}

/// The stamps file of the log at `log`.
pub fn path_of(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".stamps");
    PathBuf::from(name)
}

/// Appends one record to the stamps of the log at `log`.
pub fn append(log: &Path, stamp: Stamp) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        // Private as the log itself.
        .mode(0o600)
        .open(path_of(log))?;
    // One write: a record is never interleaved, and a torn last line is skipped on reading.
    file.write_all(format!("{} {} {}\n", stamp.from, stamp.to, stamp.nanos).as_bytes())
}

/// The stamps of the log at `log`, in file order (ascending offsets); none when the file is
/// missing. Unreadable records (a torn last line) are skipped.
pub fn read(log: &Path) -> Vec<Stamp> {
    let Ok(text) = std::fs::read_to_string(path_of(log)) else {
        return Vec::new();
    };
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let stamp = Stamp {
                from: fields.next()?.parse().ok()?,
                to: fields.next()?.parse().ok()?,
                nanos: fields.next()?.parse().ok()?,
            };
            (fields.next().is_none() && stamp.from <= stamp.to).then_some(stamp)
        })
        .collect()
}

/// How far the stamps of the log at `log` reach (0: none yet).
pub fn stamped_to(log: &Path) -> u64 {
    read(log).last().map_or(0, |s| s.to)
}

/// The modification time of `file`, unix nanoseconds (0 when unknown).
pub fn modified_nanos(file: &File) -> i64 {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Times for offsets in one log, walked in ascending order.
pub struct Clock {
    stamps: Vec<Stamp>,
    next: usize,
    /// For offsets past every stamp.
    beyond: i64,
}

impl Clock {
    pub fn new(stamps: Vec<Stamp>, beyond: i64) -> Clock {
        Clock {
            stamps,
            next: 0,
            beyond,
        }
    }

    /// When the byte at `offset` was written. Offsets must not decrease between calls.
    pub fn time_of(&mut self, offset: u64) -> i64 {
        while let Some(stamp) = self.stamps.get(self.next) {
            if offset < stamp.to {
                // Before a stamp's range (a gap, which the writer never leaves): its time too.
                return stamp.nanos;
            }
            self.next += 1;
        }
        self.beyond
    }

    /// Replaces the time for offsets past every stamp (a followed file that grew).
    pub fn set_beyond(&mut self, nanos: i64) {
        self.beyond = nanos;
    }

    /// Adds stamps recorded since (those reaching past what is known).
    pub fn extend(&mut self, stamps: Vec<Stamp>) {
        let known = self.stamps.last().map_or(0, |s| s.to);
        self.stamps
            .extend(stamps.into_iter().filter(|s| s.to > known));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stdout.log");
        assert_eq!(stamped_to(&log), 0);
        append(
            &log,
            Stamp {
                from: 0,
                to: 6,
                nanos: 10,
            },
        )
        .unwrap();
        append(
            &log,
            Stamp {
                from: 6,
                to: 9,
                nanos: 20,
            },
        )
        .unwrap();
        let mut f = OpenOptions::new().append(true).open(path_of(&log)).unwrap();
        f.write_all(b"9 12 3").unwrap();
        assert_eq!(read(&log).len(), 2);
        assert_eq!(stamped_to(&log), 9);
    }

    #[test]
    fn offsets_take_their_records_time_and_the_rest_the_fallback() {
        let stamps = vec![
            Stamp {
                from: 0,
                to: 6,
                nanos: 10,
            },
            Stamp {
                from: 6,
                to: 9,
                nanos: 20,
            },
        ];
        let mut clock = Clock::new(stamps, 99);
        assert_eq!(clock.time_of(0), 10);
        assert_eq!(clock.time_of(5), 10);
        assert_eq!(clock.time_of(6), 20);
        assert_eq!(clock.time_of(9), 99);
        clock.extend(vec![
            Stamp {
                from: 6,
                to: 9,
                nanos: 20,
            },
            Stamp {
                from: 9,
                to: 12,
                nanos: 30,
            },
        ]);
        let mut clock2 = Clock::new(Vec::new(), 5);
        assert_eq!(clock2.time_of(0), 5);
        // `clock` walked past its stamps; the new one applies to later offsets.
        assert_eq!(clock.time_of(10), 30);
    }
}
