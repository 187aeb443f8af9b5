//! Builds the eBPF object (crate `shoal-ebpf`) with the pinned nightly and bpf-linker, for
//! embedding into this crate.
//!
//! `cargo check` and `cargo clippy` must work on a machine with only stable Rust, so when the
//! BPF toolchain is missing (or under clippy, where the object is never used) this writes an
//! empty object instead, warns, and the loader refuses it at run time with a clear error.
//! `SHOAL_REQUIRE_EBPF=1` (set by the scripts) turns a missing toolchain into a build error.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow, bail};

const EBPF_PACKAGE: &str = "shoal-ebpf";
const EBPF_BIN: &str = "shoal-programs";

fn main() -> anyhow::Result<()> {
    let toolchain_env = PathBuf::from("../ebpf/toolchain.env");
    println!("cargo:rerun-if-changed={}", toolchain_env.display());
    for var in [
        "SHOAL_REQUIRE_EBPF",
        "SHOAL_TOOLCHAIN_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nightly = read_setting(&toolchain_env, "SHOAL_BPF_NIGHTLY")?;
    let toolchain_dir = PathBuf::from(
        env::var("SHOAL_TOOLCHAIN_DIR").unwrap_or_else(|_| "/opt/shoal-toolchain".into()),
    );
    let linker_dir = toolchain_dir.join("bin");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR unset"))?);

    let under_clippy = env::var("RUSTC_WORKSPACE_WRAPPER")
        .map(|w| w.contains("clippy-driver"))
        .unwrap_or(false);
    if under_clippy {
        return write_empty_object(&out_dir);
    }
    if let Err(missing) = bpf_toolchain_present(&nightly, &linker_dir) {
        if env::var("SHOAL_REQUIRE_EBPF").as_deref() == Ok("1") {
            bail!("{missing}; run scripts/setup.sh");
        }
        println!("cargo:warning={missing}: building without eBPF programs (run scripts/setup.sh)");
        return write_empty_object(&out_dir);
    }
    println!(
        "cargo:rerun-if-changed={}",
        linker_dir.join("bpf-linker").display()
    );

    // aya-build spawns `rustup run <nightly> cargo`, which must find our bpf-linker first.
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![linker_dir];
    paths.extend(env::split_paths(&path));
    let linker = PathBuf::from("../ebpf/link-bpf-v3.sh")
        .canonicalize()
        .context("finding ebpf/link-bpf-v3.sh")?;
    println!("cargo:rerun-if-changed={}", linker.display());
    // SAFETY: build scripts are single-threaded here; nothing else reads the environment yet.
    unsafe {
        env::set_var("PATH", env::join_paths(paths)?);
        // Links for BPF ISA v3 (atomic fetch-add); see the script for why.
        env::set_var("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker);
    }

    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: "../ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&nightly),
    )
}

/// Why the pinned nightly (with rust-src) or bpf-linker cannot be used, if so.
fn bpf_toolchain_present(nightly: &str, linker_dir: &std::path::Path) -> Result<(), String> {
    if !linker_dir.join("bpf-linker").is_file() {
        return Err(format!("no bpf-linker in {}", linker_dir.display()));
    }
    let sysroot = Command::new("rustup")
        .args(["run", nightly, "rustc", "--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !sysroot.status.success() {
        return Err(format!("toolchain {nightly} is not installed"));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src").is_dir() {
        return Err(format!("toolchain {nightly} has no rust-src"));
    }
    Ok(())
}

fn write_empty_object(out_dir: &std::path::Path) -> anyhow::Result<()> {
    let dst = out_dir.join(EBPF_BIN);
    fs::write(&dst, []).with_context(|| format!("writing {}", dst.display()))
}

/// Reads `KEY=value` from a shell-style settings file.
fn read_setting(file: &std::path::Path, key: &str) -> anyhow::Result<String> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .ok_or_else(|| anyhow!("{key} missing from {}", file.display()))
}
