//! Records what the binary is (`shoal version`, the Engine API's `/version`): the git commit it
//! is built from (`git rev-parse --short=12 HEAD`, or `unknown` outside a git checkout, a source
//! tarball), and its version: `SHOAL_VERSION` from the build's environment if set (so two
//! builds of one tree can differ, e.g. a release's `0.3.0-rc1`), else the package version.
use std::{path::Path, process::Command};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHOAL_GIT_COMMIT={commit}");
    let version = std::env::var("SHOAL_VERSION")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| std::env::var("CARGO_PKG_VERSION").unwrap_or_default());
    println!("cargo:rustc-env=SHOAL_BUILD_VERSION={}", version.trim());
    println!("cargo:rerun-if-env-changed=SHOAL_VERSION");
    println!("cargo:rerun-if-changed=build.rs");
    // Rerun when HEAD moves: a new commit changes the branch's ref (a loose file, or
    // packed-refs after a clone or gc), a checkout changes HEAD itself.
    let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) else {
        return;
    };
    let git_dir = Path::new(&git_dir);
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let loose = git_dir.join(&branch);
        let watched = if loose.exists() {
            loose
        } else {
            git_dir.join("packed-refs")
        };
        println!("cargo:rerun-if-changed={}", watched.display());
    }
}
