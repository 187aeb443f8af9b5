//! `--stop-signal`: signal names and numbers as Docker reads them (moby's `signal.ParseSignal`
//! and its Linux table), so the leader refuses what a node could not send and the node sends
//! what the leader accepted. Pure: the numbers are Linux's (the same on x86-64 and arm64).

/// Linux's highest signal (SIGRTMAX).
pub const MAX_SIGNAL: i32 = 64;
/// The default stop signal.
pub const SIGTERM: i32 = 15;

const SIGRTMIN: i32 = 34;

/// Docker's names, without the `SIG` prefix.
const NAMES: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// A signal Docker would not take, in its words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid signal: {0}")]
pub struct InvalidSignal(pub String);

/// `"SIGUSR1"`, `"usr1"`, `"10"`, `"RTMIN+3"`, `"SIGRTMAX"` -> the signal's number; empty ->
/// SIGTERM.
pub fn parse_signal(text: &str) -> Result<i32, InvalidSignal> {
    let invalid = || InvalidSignal(text.to_owned());
    if text.is_empty() {
        return Ok(SIGTERM);
    }
    if let Ok(number) = text.parse::<i64>() {
        return i32::try_from(number)
            .ok()
            .filter(|n| (1..=MAX_SIGNAL).contains(n))
            .ok_or_else(invalid);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, number)) = NAMES.iter().find(|(n, _)| *n == name) {
        return Ok(*number);
    }
    // RTMIN, RTMIN+1..=15, RTMAX-14..=1, RTMAX: Docker's table, which has no other offsets.
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let n: i32 = rest.strip_prefix(sign)?.parse().ok()?;
        let max = if sign == '+' { 15 } else { 14 };
        (1..=max).contains(&n).then_some(n)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return offset(rest, '+').map(|n| SIGRTMIN + n).ok_or_else(invalid);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return offset(rest, '-')
            .map(|n| MAX_SIGNAL - n)
            .ok_or_else(invalid);
    }
    Err(invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_as_docker_reads_them() {
        for (text, number) in [
            ("", 15),
            ("SIGUSR1", 10),
            ("usr1", 10),
            ("SigHup", 1),
            ("10", 10),
            ("64", 64),
            ("SIGKILL", 9),
            ("RTMIN", 34),
            ("SIGRTMIN+15", 49),
            ("RTMAX-14", 50),
            ("rtmax", 64),
            ("CLD", 17),
        ] {
            assert_eq!(parse_signal(text), Ok(number), "{text}");
        }
        for bad in [
            "0", "65", "-1", "SIGFOO", "SIG", "RTMIN+16", "RTMAX-15", "RTMIN-1", "RTMIN+", "1.5",
            " USR1",
        ] {
            assert_eq!(
                parse_signal(bad),
                Err(InvalidSignal(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            InvalidSignal("FOO".into()).to_string(),
            "invalid signal: FOO"
        );
    }
}
