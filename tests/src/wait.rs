//! Bounded waits: poll a condition until it holds or a deadline passes. Never a bare sleep.

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some`, and returns that. Panics after `timeout`
/// with `what` and the last state `check` described through `Err`.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
