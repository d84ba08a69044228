#!/usr/bin/env bash
# Namespace operations as a directory grows: create COUNT empty files in
# one directory, stat each, unlink each, for COUNT in 2,000 and 20,000, on
# vigilfs and kernel ext4 on a loop device (every image on one tmpfs), the
# systems interleaved, RUNS times; prints each system's median rate per
# operation and size. A cost per operation that grows with the directory
# shows as a lower rate at 20,000.
#
# Usage: sudo bash bench/namespace_scale.sh [RUNS]    (default 3)
# SYSTEMS="vigilfs ext4-loop" (default); BASELINE=PATH adds vigilfs-before,
# served by an earlier vigilfs binary. Needs root, /dev/fuse, mkfs.ext4.
set -euo pipefail

runs=${1:-3}
source "$(dirname "$0")/lib.sh"

rates() { # directory count → "create/s stat/s unlink/s"
    python3 - "$1" "$2" <<'PY'
import os, sys, time
root, count = os.path.join(sys.argv[1], "d"), int(sys.argv[2])
os.mkdir(root)
names = [os.path.join(root, f"f{at}") for at in range(count)]
def rate(step):
    started = time.perf_counter()
    for name in names:
        step(name)
    return count / (time.perf_counter() - started)
create = rate(lambda name: os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644)))
stat = rate(os.stat)
unlink = rate(os.unlink)
print(f"{create:.1f} {stat:.1f} {unlink:.1f}")
PY
}

results="$work/results"
: > "$results"
for run in $(seq 1 "$runs"); do
    for count in 2000 20000; do
        for system in "${systems[@]}"; do
            mountpoint=$(mount_system "$system")
            mounted=$((mounted + 1))
            echo "$system $count $(rates "$mountpoint" "$count")" >> "$results"
            unmount_system "$mountpoint"
        done
    done
    echo "run $run done" >&2
done

python3 - "$results" <<'PY'
import collections, statistics, sys
values = collections.defaultdict(list)
for line in open(sys.argv[1]):
    system, count, *rates = line.split()
    values[(system, int(count))].append([float(rate) for rate in rates])
print("| system | files | create/s | stat/s | unlink/s |")
print("|---|---|---|---|---|")
for (system, count), runs in values.items():
    medians = [statistics.median(column) for column in zip(*runs)]
    print(f"| {system} | {count:,} | " + " | ".join(f"{rate:,.0f}" for rate in medians) + " |")
PY
