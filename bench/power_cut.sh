#!/usr/bin/env bash
# Power-cut latency of a crashable mount: how long `vigilfs inject
# --power-cut` takes from the command's start to its return (the mount then
# serves the recovered image), and the cut as the mount process times it
# (power off → serving again). Before each cut a workload leaves work for
# recovery: FILES files of 64 KiB fsynced, as many written and not synced,
# and a journal with the creates of both.
#
# Usage: sudo bash bench/power_cut.sh [CUTS] [FILES]   (default 30 cuts, 200 files)
# The image lives in a tmpfs, as in bench/mount.sh.
set -euo pipefail

cuts=${1:-30}
files=${2:-200}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -p vigilfs-cli 2>/dev/null
vigilfs="$here/target/release/vigilfs"

work=$(mktemp -d /tmp/vigilfs-power-cut-bench.XXXXXX)
cleanup() {
    umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
    for _ in $(seq 1 100); do umount "$work/tmpfs" 2>/dev/null && break; sleep 0.1; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/tmpfs" "$work/mnt"
mount -t tmpfs -o size=4G tmpfs "$work/tmpfs"
"$vigilfs" mount "$work/tmpfs/vigilfs.img" "$work/mnt" --size 1G -o crashable --daemon >/dev/null

results="$work/results"
: > "$results"
for cut in $(seq 1 "$cuts"); do
    python3 - "$work/mnt" "$cut" "$files" <<'PY'
import os, sys
root, cut, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.urandom(64 << 10)
for index in range(files):
    for kind, sync in (("synced", True), ("unsynced", False)):
        fd = os.open(os.path.join(root, f"{kind}-{cut}-{index}"), os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, data)
        if sync:
            os.fsync(fd)
        os.close(fd)
PY
    started=$(date +%s%N)
    "$vigilfs" inject "$work/mnt" --power-cut --json > "$work/cut.json"
    ended=$(date +%s%N)
    took=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["took_ms"])' "$work/cut.json")
    echo "$took $(( (ended - started) / 1000 ))e-3" >> "$results"
done

python3 - "$results" "$cuts" "$files" <<'PY'
import statistics, sys
rows = [tuple(map(float, line.split())) for line in open(sys.argv[1])]
inside = sorted(row[0] for row in rows)
command = sorted(row[1] for row in rows)
def p95(values):
    return values[min(len(values) - 1, int(len(values) * 0.95))]
print(f"{len(rows)} cuts, {sys.argv[3]} synced + {sys.argv[3]} unsynced 64 KiB files before each")
print("| | median ms | p95 ms | max ms |")
print("|---|---|---|---|")
print(f"| cut in the mount process (power off to serving) | {statistics.median(inside):.1f} | {p95(inside):.1f} | {inside[-1]:.1f} |")
print(f"| `vigilfs inject --power-cut` command, start to return | {statistics.median(command):.1f} | {p95(command):.1f} | {command[-1]:.1f} |")
PY
