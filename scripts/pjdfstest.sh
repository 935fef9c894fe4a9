#!/usr/bin/env bash
# POSIX conformance of the union mount: runs pjdfstest against cowfs with a writable branch over
# a read-only one (which has entries of its own, so the tests run in a merged directory), as
# root with two dummy users, remounts allowed and /dev/shm as the second filesystem for EXDEV.
# The logs go to $CARGO_TARGET_DIR/pjdfstest/log*.txt, the summary to summary.txt. Fails on
# any failure not listed in tests/pjdfstest/pjdfstest.toml's expected_failures.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
cowfs=$target/debug/cowfs
[ -x "$cowfs" ] || { echo "pjdfstest.sh: build first (cargo build --workspace --bins)" >&2; exit 1; }
command -v pjdfstest >/dev/null || { echo "pjdfstest.sh: pjdfstest missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
for u in nobody daemon; do id "$u" >/dev/null || { echo "pjdfstest.sh: user $u missing" >&2; exit 1; }; done
scripts/install-mount-helper.sh "$cowfs" >/dev/null

work=$(mktemp -d /var/tmp/cowfs-pjdfstest.XXXXXX)
secondary=$(mktemp -d /dev/shm/cowfs-pjdfstest.XXXXXX)
cleanup() {
    "$cowfs" umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
    rm -rf "$work" "$secondary"
}
trap cleanup EXIT
# The dummy users must be able to reach the mountpoint.
chmod 755 "$work" "$secondary"
mkdir -p "$work"/{rw,ro,mnt} "$work/ro/lower-dir"
echo "from the read-only branch" > "$work/ro/lower-file"
echo "shadowed" > "$work/ro/lower-dir/file"

"$cowfs" mount -o "dirs=$work/rw=rw:$work/ro=ro" none "$work/mnt"
out=$target/pjdfstest
mkdir -p "$out"
# Two passes: pjdfstest 0.2.2 leaks descriptors open for writing in some tests (e.g.
# posix_fallocate::affected_only_create_flags never closes the fd nix::fcntl::open returned),
# after which `mount -o remount,ro` answers EBUSY on any filesystem. So everything else runs
# first without remounts, then the EROFS cases alone in a fresh process.
sed 's/^allow_remount = true/allow_remount = false/' "$root/tests/pjdfstest/pjdfstest.toml" >"$out/no-remount.toml"
status=0
run() { # config, log, [pattern]
    ( cd "$work/mnt" && pjdfstest -c "$1" -p "$work/mnt" -s "$secondary" ${3:+"$3"} ) >"$2" 2>&1 || status=$?
}
run "$out/no-remount.toml" "$out/log.txt"
run "$root/tests/pjdfstest/pjdfstest.toml" "$out/log-erofs.txt" erofs
grep -hE 'FAILED$' "$out/log.txt" "$out/log-erofs.txt" || true
# Combined counts: the first pass skips the EROFS cases that the second one runs.
erofs_cases=$(grep -cE '^[a-z_:]*erofs[a-z_:]* +(ok|FAILED|skipped)$' "$out/log-erofs.txt" || true)
grep -hE '^Summary:' "$out/log.txt" "$out/log-erofs.txt" | awk -v erofs="$erofs_cases" '
    { f += $2; s += $4; p += $6; e += $8; t += $11 }
    END { printf "pjdfstest on cowfs: %d passed, %d failed, %d skipped, %d expected failures (%d cases)\n",
                 p, f, s - erofs, e, t - erofs }' | tee "$out/summary.txt"
# The lower branch must be untouched by everything pjdfstest did.
[ "$(cat "$work/ro/lower-file")" = "from the read-only branch" ] || { echo "read-only branch modified" >&2; exit 1; }
[ "$(find "$work/ro" | wc -l)" = 4 ] || { echo "read-only branch modified" >&2; exit 1; }
exit $status
