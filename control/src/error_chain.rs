//! The workspace's one way to show an error with its causes: `what failed: why: root cause`.
//!
//! Every error type in shoal says what was being done and keeps its cause as a `#[source]`,
//! never in its own message, so walking the chain prints each step once. Used wherever an
//! error leaves the process as text: a gRPC `Status`, a log field, the CLI's one line.

use std::{error::Error, fmt};

/// Displays an error and its sources, joined by `": "`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// [`Chain`] as a string.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    Chain(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("attaching the load balancer to eth0")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_shown_once_in_order() {
        let error = Outer(std::io::Error::other("no such device"));
        assert_eq!(
            chain(&error),
            "attaching the load balancer to eth0: no such device"
        );
    }
}
