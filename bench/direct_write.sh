#!/usr/bin/env bash
# O_DIRECT writes through the mount: fio's 4 KiB random writes and 1 MiB
# sequential writes with direct=1 (psync, no fsync), on vigilfs and on
# kernel ext4 on a loop device, every image on one tmpfs; systems and
# workloads interleaved, RUNS times; prints each one's median rate. A
# direct write on vigilfs is written through to the device and made
# durable before it returns; on ext4 it reaches the device and leaves new
# extents to the next fsync. BASELINE=PATH adds vigilfs-before (an earlier
# binary, which took direct writes into its cache).
#
# Usage: sudo bash bench/direct_write.sh [RUNS]    (default 3)
# SYSTEMS="vigilfs ext4-loop" (default). Needs root, fio, mkfs.ext4.
set -euo pipefail

runs=${1:-3}
source "$(dirname "$0")/lib.sh"

rate() { # directory workload → IOPS
    local size=4k pattern=randwrite
    if [ "$2" = sequential ]; then size=1M pattern=write; fi
    fio --output-format=json --name=direct --directory="$1" --rw="$pattern" --bs="$size" \
        --size=256M --ioengine=psync --direct=1 --time_based --runtime=10 |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["jobs"][0]["write"]["iops"])'
}

results="$work/results"
: > "$results"
for run in $(seq 1 "$runs"); do
    for workload in random sequential; do
        for system in "${systems[@]}"; do
            mountpoint=$(mount_system "$system")
            mounted=$((mounted + 1))  # the subshell's count is lost
            echo "$system $workload $(rate "$mountpoint" "$workload")" >> "$results"
            unmount_system "$mountpoint"
        done
    done
    echo "run $run done" >&2
done

python3 - "$results" <<'PY'
import collections, statistics, sys
values = collections.defaultdict(list)
for line in open(sys.argv[1]):
    system, workload, iops = line.split()
    values[(system, workload)].append(float(iops))
systems = list(dict.fromkeys(system for system, _ in values))
print("| system | 4 KiB random, IOPS | 1 MiB sequential, MiB/s |")
print("|---|---|---|")
for system in systems:
    random = statistics.median(values[(system, "random")])
    sequential = statistics.median(values[(system, "sequential")])
    print(f"| {system} | {random:,.0f} | {sequential:,.0f} |")
PY
