#!/usr/bin/env bash
# Chooses the FUSE caching defaults by measurement: cached re-reads (a
# 256 MiB file read whole five times, each through a new open) and stat
# rates (2,000 files stat-ed three times), for vigilfs with and without
# FOPEN_KEEP_CACHE and with attribute/entry timeouts of 0, 1 and 10 s, and
# for libfuse's passthrough_ll (default options) — one run, one tmpfs.
#
# Usage: sudo bash bench/kernel_cache.sh     (needs root, /dev/fuse, gcc,
# pkg-config, libfuse3-dev for passthrough_ll's source)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -p vigilfs-cli 2>/dev/null
vigilfs="$here/target/release/vigilfs"
work=$(mktemp -d /tmp/vigilfs-cache-bench.XXXXXX)
cleanup() {
    umount "$work/mnt" 2>/dev/null || true
    for _ in $(seq 1 100); do umount "$work/tmpfs" 2>/dev/null && break; sleep 0.1; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/tmpfs" "$work/mnt"
mount -t tmpfs -o size=4G tmpfs "$work/tmpfs"
source=$(dpkg -L libfuse3-dev | grep 'examples/passthrough_ll.c$')
gcc -O2 "$source" $(pkg-config fuse3 --cflags --libs) -o "$work/passthrough_ll"

measure() { # label
    python3 - "$work/mnt" "$1" <<'PY'
import os, statistics, sys, time
root, label = sys.argv[1], sys.argv[2]
path = os.path.join(root, "cached")
block = b"c" * (1 << 20)
with open(path, "wb") as f:
    for _ in range(256):
        f.write(block)
    f.flush(); os.fsync(f.fileno())
rates = []
for _ in range(5):
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass
    rates.append(256 / (time.perf_counter() - started))
directory = os.path.join(root, "stat")
os.mkdir(directory)
for at in range(2000):
    open(os.path.join(directory, f"f{at}"), "w").close()
stats = []
for _ in range(3):
    started = time.perf_counter()
    for at in range(2000):
        os.stat(os.path.join(directory, f"f{at}"))
    stats.append(2000 / (time.perf_counter() - started))
print(f"| {label} | {rates[0]:,.0f} | {statistics.median(rates[1:]):,.0f} | {statistics.median(stats):,.0f} |")
PY
}

echo "| configuration | first read MiB/s | re-reads MiB/s (median of 4) | stat/s (median of 3) |"
echo "|---|---|---|---|"
for options in "keep_cache" "nokeep_cache" "keep_cache,attr_timeout=0,entry_timeout=0" "keep_cache,attr_timeout=10,entry_timeout=10"; do
    rm -f "$work/tmpfs/vigilfs.img"
    "$vigilfs" mount "$work/tmpfs/vigilfs.img" "$work/mnt" --size 1G --daemon -o "$options" >/dev/null 2>&1
    measure "vigilfs -o $options"
    umount "$work/mnt"
    for _ in $(seq 1 100); do mountpoint -q "$work/mnt" || break; sleep 0.1; done
    sleep 1
done
rm -rf "$work/tmpfs/passthrough"; mkdir -p "$work/tmpfs/passthrough"
"$work/passthrough_ll" -o source="$work/tmpfs/passthrough" "$work/mnt"
measure "passthrough_ll (defaults)"
umount "$work/mnt"
