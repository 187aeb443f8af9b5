//! Bad input to the CLI gets one clear line on stderr and a non-zero exit, never a panic.

use std::process::{Command, Output};

use shoal_tests::agent::shoal_bin;

fn shoal(args: &[&str]) -> Output {
    Command::new(shoal_bin()).args(args).output().unwrap()
}

/// Asserts a failure with `code`, exactly one stderr line containing `needle`, no panic.
fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr:?}"
    );
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unreachable_agent_is_one_line() {
    let out = shoal(&["-H", "unix:///nonexistent/shoal.sock", "info"]);
    assert_one_line_error(
        &out,
        1,
        "cannot reach the shoal agent at unix:///nonexistent/shoal.sock",
    );
}

#[test]
fn shoal_host_env_is_honoured() {
    let out = Command::new(shoal_bin())
        .env("SHOAL_HOST", "unix:///nonexistent/from-env.sock")
        .arg("info")
        .output()
        .unwrap();
    assert_one_line_error(&out, 1, "from-env.sock");
}

#[test]
fn unsupported_host_scheme_is_one_line() {
    let out = shoal(&["-H", "ftp://x", "info"]);
    assert_one_line_error(&out, 1, "unsupported host");
}

#[test]
fn unknown_flags_and_bad_values_are_one_line() {
    assert_one_line_error(&shoal(&["info", "--bogus"]), 2, "--bogus");
    assert_one_line_error(
        &shoal(&["agent", "--data-path-port", "0"]),
        2,
        "--data-path-port",
    );
    assert_one_line_error(
        &shoal(&["agent", "--advertise-addr", "not-an-ip"]),
        2,
        "not-an-ip",
    );
    assert_one_line_error(&shoal(&["agent", "--log-format", "xml"]), 2, "xml");
    assert_one_line_error(&shoal(&["agent", "--lb-flows", "100"]), 2, "--lb-flows");
    assert_one_line_error(&shoal(&["agent", "--mesh-flows", "0"]), 2, "--mesh-flows");
    assert_one_line_error(&shoal(&["frobnicate"]), 2, "frobnicate");
}

#[test]
fn agent_config_errors_are_one_line_and_create_nothing() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-errors-{}", std::process::id()));
    let state = dir.join("state");
    let socket = dir.join("shoal.sock");
    let base = [
        "agent",
        "--state-dir",
        state.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        shoal(&args)
    };
    assert_one_line_error(&with(&["--log-level", "x=["]), 1, "invalid --log-level");
    assert_one_line_error(
        &with(&["--advertise-addr", "203.0.113.7"]),
        1,
        "not an address of this host",
    );
    assert_one_line_error(
        &with(&["--hostname", ""]),
        1,
        "--hostname must not be empty",
    );
    assert!(!state.exists(), "a refused agent created its state dir");
    assert!(!socket.exists(), "a refused agent created its socket");
}
