#!/usr/bin/env bash
# The engine benchmark (issue: filesystem engine): the same workloads through
# the vigilfs engine API on an image file in tmpfs, through POSIX calls on
# tmpfs itself, and on kernel ext4 on a loop device whose image is in the
# same tmpfs. One run, side by side; prints a markdown table with ratios.
#
# Usage: sudo bash bench/engine.sh [RUNS]   (default 3 runs; medians reported)
# Needs root (tmpfs and loop mounts) and mkfs.ext4.
set -euo pipefail

runs=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

cargo bench -p vigilfs --bench engine --no-run 2>/dev/null
binary=$(ls -t target/release/deps/engine-* | grep -v '\.d$' | head -1)

work=$(mktemp -d /tmp/vigilfs-engine-bench.XXXXXX)
cleanup() {
    umount "$work/ext4" 2>/dev/null || true
    umount "$work/tmpfs" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/tmpfs"
mount -t tmpfs -o size=8G tmpfs "$work/tmpfs"
mkdir -p "$work/tmpfs/plain" "$work/ext4"
truncate -s 3G "$work/tmpfs/ext4.img"
mkfs.ext4 -q -F "$work/tmpfs/ext4.img"
mount -o loop "$work/tmpfs/ext4.img" "$work/ext4"

results="$work/results"
: > "$results"
for run in $(seq 1 "$runs"); do
    "$binary" vigilfs "$work/tmpfs/vigilfs.img" | sed "s/^/vigilfs /" >> "$results"
    "$binary" posix "$work/tmpfs/plain" | sed "s/^/tmpfs /" >> "$results"
    "$binary" posix "$work/ext4" | sed "s/^/ext4-loop /" >> "$results"
    echo "run $run of $runs done" >&2
done

python3 - "$results" <<'PY'
import collections, statistics, sys
values = collections.defaultdict(list)
units = {}
for line in open(sys.argv[1]):
    system, name, value, unit = line.split()
    values[(system, name)].append(float(value))
    units[name] = unit
names = ["seq_write", "seq_read", "random_write_fsync", "create_fsync"]
print("| workload | unit | vigilfs | tmpfs | ext4 on loop | vigilfs / tmpfs | vigilfs / ext4 |")
print("|---|---|---|---|---|---|---|")
for name in names:
    median = {s: statistics.median(values[(s, name)]) for s in ["vigilfs", "tmpfs", "ext4-loop"]}
    print(f"| {name} | {units[name]} | {median['vigilfs']:,.0f} | {median['tmpfs']:,.0f} | "
          f"{median['ext4-loop']:,.0f} | {median['vigilfs']/median['tmpfs']:.2f}x | "
          f"{median['vigilfs']/median['ext4-loop']:.2f}x |")
PY
