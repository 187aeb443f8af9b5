//! Sizes and CPU counts as Docker reads them: `512M`, `1.5g`, `100kb` with binary units
//! (go-units' `RAMInBytes`), and `cpus: "0.5"` as billionths of a CPU.

/// Parses a size: a decimal number, an optional space, then an optional unit `b`, `k`, `m`,
/// `g`, `t` or `p` (powers of 1024, any case) optionally followed by `b` or `ib`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size `{text}` (e.g. 512M, 1.5G, 100k)");
    let split = text
        .rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')
        .ok_or_else(bad)?;
    let (number, suffix) = if text.as_bytes()[split] == b' ' {
        (&text[..split], &text[split + 1..])
    } else {
        (&text[..=split], &text[split + 1..])
    };
    let size: f64 = number.parse().map_err(|_| bad())?;
    if !size.is_finite() || size < 0.0 {
        return Err(bad());
    }
    let suffix = suffix.to_ascii_lowercase();
    let multiplier: f64 = match suffix.as_bytes() {
        [] | [b'b'] => 1.0,
        [unit, rest @ ..] if rest.is_empty() || rest == b"b" || rest == b"ib" => match unit {
            b'k' => 1024.0,
            b'm' => 1024f64.powi(2),
            b'g' => 1024f64.powi(3),
            b't' => 1024f64.powi(4),
            b'p' => 1024f64.powi(5),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let bytes = size * multiplier;
    if bytes >= i64::MAX as f64 {
        return Err(format!("size `{text}` is too large"));
    }
    Ok(bytes as u64)
}

/// Parses `cpus` (`"0.5"`, `"2"`) into billionths of a CPU, as Docker's `ParseCPUs`; `None` if
/// it is not a positive decimal number with at most nine decimals.
pub fn parse_nano_cpus(text: &str) -> Option<u64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_nanos: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    whole.checked_mul(1_000_000_000)?.checked_add(frac_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_sizes() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("512b"), Ok(512));
        assert_eq!(parse_bytes("1k"), Ok(1024));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1MB"), Ok(1 << 20));
    }

    #[test]
    fn refuses_bad_sizes() {
        for bad in ["", "M", "1x", "1mm", "1kib2", "-1", "1gibb", "99999999p"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn parses_cpus() {
        assert_eq!(parse_nano_cpus("0.5"), Some(500_000_000));
        assert_eq!(parse_nano_cpus("2"), Some(2_000_000_000));
        assert_eq!(parse_nano_cpus(".25"), Some(250_000_000));
        assert_eq!(parse_nano_cpus("1.0000000001"), None);
        assert_eq!(parse_nano_cpus("abc"), None);
        assert_eq!(parse_nano_cpus("."), None);
    }
}
