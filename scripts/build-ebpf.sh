#!/usr/bin/env bash
# Builds the Rust eBPF programs (kmod/ebpf) into the object the loader embeds,
# kmod/ebpf-obj/cowfs-kmod.bpf.o, and records the BLAKE3 of the sources it was built from in
# kmod/ebpf-obj/cowfs-kmod.bpf.json. Commit both. See DEVELOPERS.md, "The eBPF object".
#
#   scripts/build-ebpf.sh           install the toolchain if missing, build, update the committed object
#   scripts/build-ebpf.sh --check   rebuild in a scratch directory and compare with the committed object;
#                                   when the toolchain cannot be installed, say so and exit 0 (the unit
#                                   test on the recorded source hash still catches a stale object)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

mode=build
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

BPF_LINKER_VERSION=0.10.4
# Nightly features (build-std) on the stable compiler: the object must not depend on which
# nightly happens to be installed, and bpf-linker uses this rustc's own LLVM.
BUILD_CMD="RUSTC_BOOTSTRAP=1 cargo build -Z build-std=core --target bpfel-unknown-none --release --locked"

toolchain() {
    if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
        echo "build-ebpf: rustup component add rust-src"
        rustup component add rust-src || { echo "build-ebpf: rust-src could not be installed"; return 1; }
    fi
    if ! bpf-linker --version 2>/dev/null | grep -qx "bpf-linker $BPF_LINKER_VERSION"; then
        echo "build-ebpf: cargo install bpf-linker@$BPF_LINKER_VERSION --locked (a few minutes)"
        cargo install "bpf-linker@$BPF_LINKER_VERSION" --locked ||
            { echo "build-ebpf: bpf-linker could not be installed"; return 1; }
    fi
}

if ! toolchain; then
    if [ $mode = check ]; then
        echo "build-ebpf: SKIPPED the rebuild check: the eBPF toolchain is not available here;"
        echo "build-ebpf: the committed object is still checked against the sources by a unit test"
        exit 0
    fi
    exit 1
fi

target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
(cd kmod/ebpf && CARGO_TARGET_DIR="$target" RUSTC_BOOTSTRAP=1 \
    cargo build -Z build-std=core --target bpfel-unknown-none --release --locked)
fresh="$target/bpfel-unknown-none/release/cowfs-kmod"

# The helper is an ordinary workspace example (stable Rust, built for the host).
helper() { cargo run --quiet --locked -p cowfs-kmod --example ebpf_object -- "$@"; }

if [ $mode = check ]; then
    helper compare "$fresh" kmod/ebpf-obj/cowfs-kmod.bpf.o
    exit
fi

mkdir -p kmod/ebpf-obj
cp "$fresh" kmod/ebpf-obj/cowfs-kmod.bpf.o
helper manifest "$repo" kmod/ebpf-obj/cowfs-kmod.bpf.o "$(rustc -V)" "$(bpf-linker --version)" \
    "$BUILD_CMD" > kmod/ebpf-obj/cowfs-kmod.bpf.json.tmp
mv kmod/ebpf-obj/cowfs-kmod.bpf.json.tmp kmod/ebpf-obj/cowfs-kmod.bpf.json
echo "build-ebpf: wrote kmod/ebpf-obj/cowfs-kmod.bpf.o ($(stat -c %s kmod/ebpf-obj/cowfs-kmod.bpf.o) bytes) and its manifest"
