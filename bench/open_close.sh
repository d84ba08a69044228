#!/usr/bin/env bash
# What an open and a close of an existing file cost through the mount:
# 10,000 open(O_RDONLY)+close of 10,000 files of 100 bytes, on vigilfs,
# kernel ext4 on a loop device and libfuse's passthrough_ll, all over one
# tmpfs, in rounds that take the systems in turn (ratios are read within
# a round: this machine is noisy). Then, for vigilfs, the FUSE requests
# one open+close sends and each one's round trip, from the kernel's fuse
# tracepoints (send to end, so the daemon's time and the queueing).
#
# Usage: sudo bash bench/open_close.sh [ROUNDS]   (needs root, /dev/fuse,
# gcc, pkg-config, libfuse3-dev for passthrough_ll's source, tracefs)
set -euo pipefail
rounds=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -p vigilfs-cli 2>/dev/null
vigilfs="$here/target/release/vigilfs"
work=$(mktemp -d /tmp/vigilfs-open-bench.XXXXXX)
tracing=/sys/kernel/tracing
cleanup() {
    echo 0 > "$tracing/events/fuse/enable" 2>/dev/null || true
    for mountpoint in "$work"/mnt-*; do umount "$mountpoint" 2>/dev/null || true; done
    for _ in $(seq 1 100); do umount "$work/tmpfs" 2>/dev/null && break; sleep 0.1; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/tmpfs" "$work/mnt-vigilfs" "$work/mnt-ext4" "$work/mnt-passthrough"
mount -t tmpfs -o size=3G tmpfs "$work/tmpfs"
source=$(dpkg -L libfuse3-dev | grep 'examples/passthrough_ll.c$')
gcc -O2 "$source" $(pkg-config fuse3 --cflags --libs) -o "$work/passthrough_ll"

"$vigilfs" mkfs --size 1G "$work/tmpfs/vigilfs.img" > /dev/null
"$vigilfs" mount "$work/tmpfs/vigilfs.img" "$work/mnt-vigilfs" --daemon > /dev/null
truncate -s 1G "$work/tmpfs/ext4.img"
mkfs.ext4 -q "$work/tmpfs/ext4.img"
mount -o loop "$work/tmpfs/ext4.img" "$work/mnt-ext4"
mkdir -p "$work/tmpfs/passthrough"
"$work/passthrough_ll" -o source="$work/tmpfs/passthrough",allow_other "$work/mnt-passthrough"

opens() { # make|open DIRECTORY
    python3 - "$1" "$2" <<'PY'
import os, sys, time
mode, directory = sys.argv[1], sys.argv[2]
count = 10_000
if mode == "make":
    os.makedirs(directory)
    for at in range(count):
        fd = os.open(f"{directory}/f{at}", os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, b"x" * 100)
        os.close(fd)
    os.sync()
else:
    started = time.perf_counter()
    for at in range(count):
        os.close(os.open(f"{directory}/f{at}", os.O_RDONLY))
    print(f"{(time.perf_counter() - started) * 1e6 / count:.1f}")
PY
}

systems=(vigilfs ext4 passthrough)
for system in "${systems[@]}"; do opens make "$work/mnt-$system/files"; done
echo "| round | vigilfs µs | ext4-loop µs | passthrough_ll µs | vigilfs/ext4 time | vigilfs/passthrough time |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
    declare -A took=()
    for system in "${systems[@]}"; do took[$system]=$(opens open "$work/mnt-$system/files"); done
    python3 -c "
v, e, p = ${took[vigilfs]}, ${took[ext4]}, ${took[passthrough]}
print(f'| $round | {v} | {e} | {p} | {v / e:.1f}× | {v / p:.2f}× |')"
done

# The requests of 1,000 open+close on vigilfs and their round trips.
echo > "$tracing/trace"
echo 1 > "$tracing/events/fuse/enable"
python3 - "$work/mnt-vigilfs/files" <<'PY' > /dev/null
import os, sys
for at in range(1000):
    os.close(os.open(f"{sys.argv[1]}/f{at}", os.O_RDONLY))
PY
echo 0 > "$tracing/events/fuse/enable"
python3 - "$tracing/trace" <<'PY'
import re, statistics, sys
sent, took = {}, {}
for line in open(sys.argv[1]):
    found = re.search(r"\s(\d+\.\d+): fuse_request_(send|end): connection \d+ req (\d+)(?: opcode \d+ \((\w+)\))?", line)
    if not found:
        continue
    at, what, request, opcode = float(found[1]), found[2], found[3], found[4]
    if what == "send":
        sent[request] = (at, opcode)
    elif request in sent:
        started, opcode = sent.pop(request)
        took.setdefault(opcode, []).append((at - started) * 1e6)
print("| request (1,000 open+close) | count | round trip µs, median | p90 |")
print("|---|---|---|---|")
for opcode, times in sorted(took.items()):
    times.sort()
    print(f"| {opcode} | {len(times)} | {statistics.median(times):.0f} | {times[len(times) * 9 // 10]:.0f} |")
PY
