//! Identifying a task's process across agent restarts. A PID alone is not enough: PIDs are
//! recycled (pid_max can be as low as 32768), so a task's process is its PID plus its start
//! time (clock ticks since boot, field 22 of `/proc/<pid>/stat`), which a recycled PID cannot
//! share.

use std::fs;

/// A process as recorded in a task's `pid` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub start_time: u64,
}

/// What became of a recorded process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Exited but not reaped yet: its PID is still held, so signalling it is still safe.
    Zombie,
    /// Gone, or its PID now belongs to another process.
    Gone,
}

/// State letter and start time of `pid`, or `None` if there is no such process.
fn read_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `comm` (field 2) is in parentheses and may itself contain spaces and ')': the fixed
    // fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 (state) was the first after ')'; starttime is field 22.
    let start_time = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start_time))
}

impl ProcessIdentity {
    /// The identity of a live (or zombie) process.
    pub fn of(pid: u32) -> Option<ProcessIdentity> {
        read_stat(pid).map(|(_, start_time)| ProcessIdentity { pid, start_time })
    }

    pub fn liveness(&self) -> Liveness {
        match read_stat(self.pid) {
            Some((_, start)) if start != self.start_time => Liveness::Gone,
            // Z: zombie, X: dead (seen only briefly while the kernel tears it down).
            Some(('Z' | 'X', _)) => Liveness::Zombie,
            Some(_) => Liveness::Alive,
            None => Liveness::Gone,
        }
    }

    /// The PID as nix wants it. PIDs are at most 2^22 (PID_MAX_LIMIT), so the cast is exact.
    pub fn nix_pid(self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.pid as i32)
    }

    /// The `pid` file's content.
    pub fn to_line(self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    pub fn parse(line: &str) -> Option<ProcessIdentity> {
        let mut parts = line.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        let start_time = parts.next()?.parse().ok()?;
        if parts.next().is_some() || pid == 0 {
            return None;
        }
        Some(ProcessIdentity { pid, start_time })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_identity_is_alive_and_round_trips() {
        let me = ProcessIdentity::of(std::process::id()).expect("own stat");
        assert_eq!(me.liveness(), Liveness::Alive);
        assert_eq!(ProcessIdentity::parse(&me.to_line()), Some(me));
        let recycled = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert_eq!(recycled.liveness(), Liveness::Gone);
        assert_eq!(ProcessIdentity::parse("12"), None);
        assert_eq!(ProcessIdentity::parse("0 5"), None);
    }
}
