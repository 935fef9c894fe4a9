#!/usr/bin/env bash
# Makes `mount -t fuse.cowfs …`, fstab lines of type fuse.cowfs and `mount -o remount,ro MNT`
# work: mount(8) runs /sbin/mount.fuse.<subtype> by absolute path (it does not pass the caller's
# PATH on to helpers), so a link named mount.fuse.cowfs to the cowfs binary is what it needs.
#
#   scripts/install-mount-helper.sh [COWFS_BINARY]   # default: target/release or target/debug
#
# Idempotent; needs root. Without the link, fuse3's generic mount.fuse would look for `cowfs`
# in mount's sanitized PATH, which a development build is not in.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-}
if [ -z "$bin" ]; then
    target=${CARGO_TARGET_DIR:-target}
    for candidate in "$target/release/cowfs" "$target/debug/cowfs"; do
        if [ -x "$candidate" ]; then bin=$candidate; break; fi
    done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "install-mount-helper: no cowfs binary (build it first, or pass its path)" >&2
    exit 1
fi
bin=$(readlink -f "$bin")
# /sbin is where libmount looks for helpers (on merged-/usr systems it is /usr/sbin).
sbin=$(readlink -f /sbin)
ln -sfn "$bin" "$sbin/mount.fuse.cowfs"
echo "install-mount-helper: $sbin/mount.fuse.cowfs -> $bin"
