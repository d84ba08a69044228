#!/usr/bin/env bash
# The engine benchmark (issue: filesystem engine): the same workloads through
# the vigilfs engine API on an image file in tmpfs, through POSIX calls on
# tmpfs itself, and on kernel ext4 on a loop device whose image is in the
# same tmpfs. One run, side by side; prints a markdown table with ratios.
#
# Usage: sudo bash bench/engine.sh [RUNS]   (default 3 runs; medians reported)
# Needs root (tmpfs and loop mounts) and mkfs.ext4.
#
# BASELINE=PATH: also run PATH, an engine benchmark binary built from an
# earlier commit (same benches/engine.rs), as "before" in the same runs, and
# report this build against it.
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
before() {
    if [ -n "${BASELINE:-}" ]; then
        "$BASELINE" vigilfs "$work/tmpfs/vigilfs.img" | sed "s/^/before /" >> "$results"
    fi
}
for run in $(seq 1 "$runs"); do
    # The baseline goes first in odd runs and second in even ones, so
    # neither build always gets the colder (or warmer) machine.
    if [ $((run % 2)) -eq 1 ]; then before; fi
    "$binary" vigilfs "$work/tmpfs/vigilfs.img" | sed "s/^/vigilfs /" >> "$results"
    if [ $((run % 2)) -eq 0 ]; then before; fi
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
names = ["seq_write", "seq_read", "random_write_fsync", "create_fsync",
         "parallel_write_fsync", "read_during_fsync"]
baseline = any(system == "before" for system, _ in values)
systems = (["before"] if baseline else []) + ["vigilfs", "tmpfs", "ext4-loop"]
header = ["workload", "unit"] + (["vigilfs before"] if baseline else []) + [
    "vigilfs", "tmpfs", "ext4 on loop"] + (["vigilfs / before"] if baseline else []) + [
    "vigilfs / tmpfs", "vigilfs / ext4"]
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
for name in names:
    median = {s: statistics.median(values[(s, name)]) for s in systems}
    cells = [name, units[name]] + [f"{median[s]:,.0f}" for s in systems]
    ratios = (["before"] if baseline else []) + ["tmpfs", "ext4-loop"]
    cells += [f"{median['vigilfs'] / median[s]:.2f}x" for s in ratios]
    print("| " + " | ".join(cells) + " |")
PY
