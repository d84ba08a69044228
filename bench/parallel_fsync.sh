#!/usr/bin/env bash
# Parallel fsync through the mount (issue 16's parallel target): fio's 4 KiB
# random write + fsync (psync, fsync after every write) with one job, then
# with two jobs each on its own 256 MiB file, on vigilfs and on kernel ext4
# on a loop device, every image on one tmpfs; the two cases interleaved,
# RUNS times; prints each system's median IOPS (all jobs together) and the
# two-job / one-job ratio. It also reads /proc/stat around each fio run:
# how many of the machine's CPUs were busy (fio, the FUSE daemon, the
# kernel) while one job ran, and so the most two jobs could reach if
# nothing but CPU time limited them (CPUs / CPUs busy with one job). Run it
# on an otherwise idle machine: other work counts as busy.
#
# Usage: sudo bash bench/parallel_fsync.sh [RUNS]    (default 3)
# SYSTEMS="vigilfs ext4-loop" (default); BASELINE=PATH adds vigilfs-before,
# served by an earlier vigilfs binary. Needs root, fio, mkfs.ext4.
set -euo pipefail

runs=${1:-3}
source "$(dirname "$0")/lib.sh"

busy_jiffies() { # → "busy total" jiffies of all CPUs so far
    awk '/^cpu / { total = 0; for (i = 2; i <= NF; i++) total += $i;
                   print total - $5 - $6, total }' /proc/stat
}

iops() { # directory jobs → IOPS of all jobs together
    fio --output-format=json --name=randw --directory="$1" --rw=randwrite --bs=4k \
        --size=256M --ioengine=psync --fsync=1 --numjobs="$2" --group_reporting \
        --time_based --runtime=10 |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["jobs"][0]["write"]["iops"])'
}

results="$work/results"
: > "$results"
for run in $(seq 1 "$runs"); do
    for system in "${systems[@]}"; do
        for jobs in 1 2; do
            mountpoint=$(mount_system "$system")
            mounted=$((mounted + 1))  # the subshell's count is lost
            before=$(busy_jiffies)
            rate=$(iops "$mountpoint" "$jobs")
            after=$(busy_jiffies)
            busy=$(echo "$before $after $(nproc)" |
                awk '{ print ($3 - $1) / ($4 - $2) * $5 }')
            echo "$system $jobs $rate $busy" >> "$results"
            unmount_system "$mountpoint"
        done
        echo "run $run: $system done" >&2
    done
done

python3 - "$results" <<'PY'
import collections, os, statistics, sys
values = collections.defaultdict(list)
busy = collections.defaultdict(list)
for line in open(sys.argv[1]):
    system, jobs, iops, cpus = line.split()
    values[(system, int(jobs))].append(float(iops))
    busy[(system, int(jobs))].append(float(cpus))
systems = list(dict.fromkeys(system for system, _ in values))
cpus = os.cpu_count()
print("| system | 1 job IOPS | 2 jobs IOPS | 2 jobs / 1 job "
      "| CPUs busy, 1 job | CPUs busy, 2 jobs | CPU-bound ceiling |")
print("|---|---|---|---|---|---|---|")
for system in systems:
    one = statistics.median(values[(system, 1)])
    two = statistics.median(values[(system, 2)])
    busy_one = statistics.median(busy[(system, 1)])
    busy_two = statistics.median(busy[(system, 2)])
    print(f"| {system} | {one:,.0f} | {two:,.0f} | {two / one:.2f}x "
          f"| {busy_one:.2f} of {cpus} | {busy_two:.2f} of {cpus} "
          f"| {cpus / busy_one:.2f}x |")
PY
