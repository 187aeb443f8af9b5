#!/usr/bin/env bash
# Builds everything and runs shoal's whole test suite: unit tests, then the end-to-end tests
# (real namespaces, eBPF programs and agents; needs root), then the format and lint checks.
# Set-up (packages, eBPF toolchain, bpffs) is done first, and is quick when already done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

./scripts/setup.sh
# A missing eBPF toolchain must fail the build, not produce a binary without programs.
export SHOAL_REQUIRE_EBPF=1

echo "test: building"
cargo build --locked --all-targets
echo "test: running tests"
cargo test --locked
echo "test: checking format and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
echo "test: all passed"
