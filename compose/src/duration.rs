//! Durations as Docker reads and prints them: Go's `time.ParseDuration` (`10s`, `1m30s`,
//! `1.5h`, `300ms`) and `time.Duration.String` (`1m30s`, `1h0m0s`, `500ms`).

use std::time::Duration;

/// Parses a Go duration. Negative durations, which Go accepts, are refused: no Compose setting
/// means anything with them and swarm rejects them later anyway.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration `{text}` (e.g. 10s, 1m30s, 500ms)");
    let mut rest = text;
    let negative = rest.starts_with('-');
    if let Some(stripped) = rest.strip_prefix(['-', '+']) {
        rest = stripped;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(len)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        // The fraction, in units of `scale`, truncated to nanoseconds as Go does.
        let mut frac_ns: u128 = 0;
        let mut divisor: u128 = 1;
        for digit in frac.bytes().take(30) {
            frac_ns = frac_ns * 10 + u128::from(digit - b'0');
            divisor *= 10;
        }
        total = whole
            .checked_mul(scale)
            .and_then(|t| t.checked_add(frac_ns * scale / divisor))
            .and_then(|t| total.checked_add(t))
            .filter(|t| *t <= i64::MAX as u128)
            .ok_or_else(|| format!("duration `{text}` is too long"))?;
        rest = after;
    }
    if negative && total > 0 {
        return Err(format!("duration `{text}` is negative"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Prints a duration as Go's `time.Duration.String` does.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (scale, digits, unit) = match nanos {
            n if n < 1_000 => return format!("{n}ns"),
            n if n < 1_000_000 => (1_000, 3, "µs"),
            _ => (1_000_000, 6, "ms"),
        };
        return format!("{}{}{unit}", nanos / scale, fraction(nanos % scale, digits));
    }
    let secs = nanos / 1_000_000_000;
    let frac = fraction(nanos % 1_000_000_000, 9);
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}{frac}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}{frac}s")
    } else {
        format!("{seconds}{frac}s")
    }
}

/// `.5` for 500 of 10^3, nothing for 0: trailing zeros dropped.
fn fraction(value: u128, digits: usize) -> String {
    if value == 0 {
        return String::new();
    }
    let text = format!("{value:0digits$}");
    format!(".{}", text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1h2m3s4ms5us6ns"), Ok(Duration::new(3723, 4_005_006)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("+2s"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn refuses_bad_durations() {
        for bad in [
            "",
            "10",
            "s",
            "1x",
            "1.s.",
            ".s",
            "-1s",
            "1s1",
            "9999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn prints_like_go() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(format(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(format(Duration::from_nanos(15)), "15ns");
    }
}
