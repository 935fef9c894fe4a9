#!/usr/bin/env bash
# Installs everything the tests and benchmarks need, idempotently: apt packages, cargo-installed
# tools and the guest-root corpus. Safe to run again; does nothing that is already done.
#
#   scripts/install-deps.sh            # what the test suite needs
#   scripts/install-deps.sh --bench    # plus the peers the benchmarks compare against
set -euo pipefail
cd "$(dirname "$0")/.."

bench=0
[ "${1:-}" = "--bench" ] && bench=1

apt_pkgs=(debootstrap attr acl libcap2-bin fuse3 e2fsprogs util-linux procps psmisc)
[ $bench = 1 ] && apt_pkgs+=(fuse-overlayfs unionfs-fuse jdupes rdfind fio time)

missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# pjdfstest (POSIX conformance suite, Rust rewrite) for scripts/pjdfstest.sh.
if ! command -v pjdfstest >/dev/null 2>&1; then
    echo "install-deps: cargo install pjdfstest --locked"
    cargo install pjdfstest --locked --quiet
fi

# cargo-fuzz for scripts/fuzz.sh (the parsers' fuzz targets, fuzz/).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "install-deps: cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked --quiet
fi

# The guest-root corpus (Debian bookworm via debootstrap), built once per machine.
export BASE=${COWFS_CORPUS:-/var/tmp/cowfs-corpus}
if [ ! -f "$BASE/tarballs/g3.tar" ]; then
    echo "install-deps: building the corpus in $BASE (a few minutes)"
    scripts/make-corpus.sh
fi
