#!/usr/bin/env bash
# Parallel fsync through the mount (issue 16's parallel target): fio's 4 KiB
# random write + fsync (psync, fsync after every write) with one job, then
# with two jobs each on its own 256 MiB file, on vigilfs and on kernel ext4
# on a loop device, every image on one tmpfs; the two cases interleaved,
# RUNS times; prints each system's median IOPS (all jobs together) and the
# two-job / one-job ratio.
#
# Usage: sudo bash bench/parallel_fsync.sh [RUNS]    (default 3)
# SYSTEMS="vigilfs ext4-loop" (default); BASELINE=PATH adds vigilfs-before,
# served by an earlier vigilfs binary. Needs root, fio, mkfs.ext4.
set -euo pipefail

runs=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -p vigilfs-cli 2>/dev/null
vigilfs="$here/target/release/vigilfs"

work=$(mktemp -d /tmp/vigilfs-parallel-bench.XXXXXX)
cleanup() {
    for mountpoint in "$work"/mnt/*; do
        umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" 2>/dev/null || true
    done
    for _ in $(seq 1 100); do
        umount "$work/tmpfs" 2>/dev/null && break
        sleep 0.1
    done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/tmpfs" "$work/mnt"
mount -t tmpfs -o size=6G tmpfs "$work/tmpfs"

mounted=0
mount_system() { # system → mount point (a new image and mount point each
    # time: an older vigilfs may still be closing the previous one when
    # umount has returned)
    local system=$1 mountpoint="$work/mnt/$1-$mounted"
    local image="$work/tmpfs/$system-$mounted.img"
    mounted=$((mounted + 1))
    mkdir -p "$mountpoint"
    # The daemon must not hold the caller's stdout: this runs in $(...).
    case $system in
        vigilfs) "$vigilfs" mount "$image" "$mountpoint" --size 2G --daemon >&2 ;;
        vigilfs-before) "$BASELINE" mount "$image" "$mountpoint" --size 2G --daemon >&2 ;;
        ext4-loop)
            truncate -s 2G "$image"
            mkfs.ext4 -q -F "$image" >&2
            mount -o loop "$image" "$mountpoint" ;;
    esac
    mountpoint -q "$mountpoint" || { echo "mounting $system failed" >&2; exit 1; }
    echo "$mountpoint"
}

unmount_system() {
    umount "$1"
    for _ in $(seq 1 100); do
        mountpoint -q "$1" || break
        sleep 0.1
    done
    rm -f "$work/tmpfs/"*.img  # a daemon still closing one keeps it until then
}

iops() { # directory jobs → IOPS of all jobs together
    fio --output-format=json --name=randw --directory="$1" --rw=randwrite --bs=4k \
        --size=256M --ioengine=psync --fsync=1 --numjobs="$2" --group_reporting \
        --time_based --runtime=10 |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["jobs"][0]["write"]["iops"])'
}

results="$work/results"
: > "$results"
read -r -a systems <<< "${SYSTEMS:-vigilfs ext4-loop}"
if [ -n "${BASELINE:-}" ]; then systems=(vigilfs-before "${systems[@]}"); fi
for run in $(seq 1 "$runs"); do
    for system in "${systems[@]}"; do
        for jobs in 1 2; do
            mountpoint=$(mount_system "$system")
            mounted=$((mounted + 1))  # the subshell's count is lost
            echo "$system $jobs $(iops "$mountpoint" "$jobs")" >> "$results"
            unmount_system "$mountpoint"
        done
        echo "run $run: $system done" >&2
    done
done

python3 - "$results" <<'PY'
import collections, statistics, sys
values = collections.defaultdict(list)
for line in open(sys.argv[1]):
    system, jobs, iops = line.split()
    values[(system, int(jobs))].append(float(iops))
systems = list(dict.fromkeys(system for system, _ in values))
print("| system | 1 job IOPS | 2 jobs IOPS | 2 jobs / 1 job |")
print("|---|---|---|---|")
for system in systems:
    one = statistics.median(values[(system, 1)])
    two = statistics.median(values[(system, 2)])
    print(f"| {system} | {one:,.0f} | {two:,.0f} | {two / one:.2f}x |")
PY
