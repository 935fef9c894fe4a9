#!/bin/bash
# Vendored from the founders' shared corpus recipe so that a clean clone (CI) can build the corpus.
# Builds a realistic corpus of guest root filesystems (Debian bookworm, debootstrap) for tests
# and benchmarks of unification and of the union mount.
#
#   guests/g1  bookworm --variant=minbase
#   guests/g2  bookworm --variant=minbase          (independent second install)
#   guests/g3  bookworm --variant=minbase --include=python3,openssh-server
#
# Also writes tarballs/gN.tar (tar --xattrs, numeric owners) for fast restore:
#   mkdir -p DEST/gN && tar --xattrs --xattrs-include='*' --numeric-owner -xpf tarballs/gN.tar -C DEST/gN
# (or: ./make-corpus.sh restore DEST)
#
# Usage: ./make-corpus.sh [build|tar|restore DEST]   (default: build + tar)
# Env:   BASE=/var/tmp/cowfs-corpus  MIRROR=(default: the machine's own apt source)  SUITE=bookworm
#        EXTRA=python3,openssh-server   CACHE=$BASE/debcache (shared .deb cache)
set -euo pipefail

BASE=${BASE:-/var/tmp/cowfs-corpus}
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null; true)}
MIRROR=${MIRROR:-$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null; true)}
SUITE=${SUITE:-bookworm}
EXTRA=${EXTRA:-python3,openssh-server}
CACHE=${CACHE:-$BASE/debcache}
G=$BASE/guests
T=$BASE/tarballs
LOG=$BASE/make-corpus.log
TAROPTS=(--xattrs --xattrs-include='*' --numeric-owner)

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; }; }

bootstrap() {   # name, extra debootstrap args...
    local name=$1; shift
    local t0=$SECONDS
    rm -rf "${G:?}/$name"
    # policy-rc.d is not available before the chroot exists; invoke-rc.d in a
    # chroot without a runlevel refuses to start daemons (sshd is not started).
    debootstrap --variant=minbase --cache-dir="$CACHE" "$@" "$SUITE" "$G/$name" "$MIRROR" \
        >"$BASE/debootstrap-$name.log" 2>&1
    # drop anything debootstrap may have left in the apt cache
    rm -f "$G/$name"/var/cache/apt/archives/*.deb
    echo "$(date -Is) debootstrap $name $* : $((SECONDS - t0)) s" | tee -a "$LOG"
}

build() {
    need debootstrap debootstrap
    mkdir -p "$G" "$CACHE"
    bootstrap g1
    bootstrap g2
    bootstrap g3 --include="$EXTRA"
}

mktar() {
    mkdir -p "$T"
    for g in g1 g2 g3; do
        local t0=$SECONDS
        tar "${TAROPTS[@]}" -cpf "$T/$g.tar" -C "$G/$g" .
        echo "$(date -Is) tar $g : $((SECONDS - t0)) s, $(stat -c %s "$T/$g.tar") bytes" | tee -a "$LOG"
    done
}

restore() {     # DEST: creates DEST/g1 DEST/g2 DEST/g3 from the tarballs
    local dest=$1
    for g in g1 g2 g3; do
        rm -rf "${dest:?}/$g"; mkdir -p "$dest/$g"
        tar "${TAROPTS[@]}" -xpf "$T/$g.tar" -C "$dest/$g"
    done
}

case "${1:-all}" in
    build)   build ;;
    tar)     mktar ;;
    restore) restore "${2:?usage: $0 restore DEST}" ;;
    all)     build; mktar ;;
    *) echo "usage: $0 [build|tar|restore DEST|all]" >&2; exit 2 ;;
esac
