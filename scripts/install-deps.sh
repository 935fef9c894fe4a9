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

# What the tests run (mount, setpriv, chroot, getfattr, getcap, mount.fuse3, pgrep, ip, tar …),
# what building needs (a C toolchain for linking, curl and certificates to fetch Rust), and
# what scripts/make-corpus.sh needs (debootstrap).
apt_pkgs=(debootstrap attr acl libcap2-bin fuse3 e2fsprogs util-linux mount procps psmisc
          coreutils findutils tar iproute2 build-essential curl ca-certificates)
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

# Rust (the workspace's rust-version or newer) with the components scripts/test.sh uses for its
# lint step. rustup is installed the official way when neither it nor cargo is present.
if ! command -v rustup >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/rustup" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v rustup >/dev/null 2>&1 && ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: installing Rust with rustup (https://rustup.rs)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if command -v rustup >/dev/null 2>&1; then
    need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
    have=$(rustc --version 2>/dev/null | awk '{print $2}')
    if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
        echo "install-deps: rustc ${have:-missing} is older than $need: rustup update stable"
        rustup update stable
    fi
    # Idempotent: prints "up to date" when they are there.
    rustup component add rustfmt clippy
else
    # A Rust without rustup (distribution packages): the components must come from there too.
    for tool in "cargo fmt" "cargo clippy"; do
        $tool --version >/dev/null 2>&1 ||
            { echo "install-deps: '$tool' is missing and there is no rustup to install it" >&2; exit 1; }
    done
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
