#!/usr/bin/env bash
# Fuzzes cowfs' parsers with cargo-fuzz (libFuzzer) on the stable compiler: the exclude-list
# parser, the mount option parser, the control-socket protocol and the whiteout/name handling.
#
#   scripts/fuzz.sh                 # every target for 20 s (what scripts/test.sh runs)
#   scripts/fuzz.sh 3600            # every target for an hour
#   scripts/fuzz.sh 14400 mount_options
#
# cargo-fuzz needs nightly flags (-Z…): RUSTC_BOOTSTRAP=1 lets the stable rustc accept them, as
# for the eBPF object. The fuzz crate (fuzz/) is not a workspace member, so a plain cargo build
# never needs them. Seeds live in fuzz/seeds/TARGET (committed); the growing corpus in
# $CARGO_TARGET_DIR/fuzz-corpus/TARGET. A crash fails the run and leaves its input in
# fuzz/artifacts/TARGET/: turn it into a regression test next to the code it broke.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(exclude_list mount_options control_protocol whiteout_names)
command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: cargo-fuzz missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
# Coverage-guided, with debug assertions, no sanitizer, unoptimised: the code under test is safe
# Rust, and a quick build matters more in CI than executions per second.
flags=(--dev --sanitizer none --debug-assertions)
target_dir=${CARGO_TARGET_DIR:-$root/target}
corpus_root=$target_dir/fuzz-corpus
( cd fuzz && cargo fuzz build "${flags[@]}" --target-dir "$target_dir/fuzz" )
status=0
for t in "${targets[@]}"; do
    corpus=$corpus_root/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    echo "== fuzz $t for ${secs}s"
    log=$target_dir/fuzz-$t.log
    if ( cd fuzz && cargo fuzz run "${flags[@]}" --target-dir "$target_dir/fuzz" "$t" \
            "$corpus" "seeds/$t" -- -max_total_time="$secs" -print_final_stats=1 \
            -max_len=4096 ) >"$log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$log" \
            | sed "s/^/  $t: /" || true
    else
        status=1
        echo "fuzz $t FAILED; log $log; inputs in fuzz/artifacts/$t:" >&2
        tail -40 "$log" >&2
        ls -l "fuzz/artifacts/$t" >&2 || true
    fi
done
exit $status
