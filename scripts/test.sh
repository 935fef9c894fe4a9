#!/usr/bin/env bash
# Runs every test of cowfs: lints, unit tests, end-to-end tests that mount for real, and the
# conformance suites. Needs root and /dev/fuse. Installs what it needs first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# A Rust that install-deps.sh has just installed with rustup lives here.
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== build"
# The end-to-end tests run the real binaries from target/debug.
cargo build --workspace --bins

echo "== unit and end-to-end tests (incl. the differential random-operation tester)"
# Each reliability test appends its figures; start this run's list afresh.
rm -f "${CARGO_TARGET_DIR:-target}/debug/reliability/figures.jsonl"
cargo test --workspace

echo "== reliability figures of this run (docs/RELIABILITY.md)"
# The reliability tests (tests/reliability_*.rs) ran above with their bounded CI budgets and
# appended their figures here; the long runs raise the COWFS_REL_* budgets (see the doc).
cat "${CARGO_TARGET_DIR:-target}/debug/reliability/figures.jsonl" 2>/dev/null || true

echo "== fuzzing: every target for a bounded time"
scripts/fuzz.sh "${COWFS_FUZZ_SECONDS:-20}"

echo "== pjdfstest against the union mount"
scripts/pjdfstest.sh

echo "== eBPF object: rebuild kmod/ebpf and compare with the committed object"
# Installs rust-src and bpf-linker when it can; if it cannot, says so and the unit test on the
# recorded source hash (cargo test above) is what guards against a stale object.
scripts/build-ebpf.sh --check

echo "== all tests passed"
