#!/usr/bin/env bash
# The scrub benchmark (issue 14): scrub throughput against a plain
# sequential read of the same image in the same run, and the random-read
# rate of a foreground reader with and without a scrub running,
# interleaved round by round (benches/scrub.rs says how).
#
# Usage: bash bench/scrub.sh [ROUNDS]    (default 5; medians reported)
#
# The 2 GiB image lives in target/tmp on the filesystem holding the
# checkout (a disk, not tmpfs: the point is reads that reach the device);
# the host's page cache of that one file is dropped throughout with
# posix_fadvise, nothing global. No root needed.
set -euo pipefail

rounds=${1:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo bench -p vigilfs --bench scrub --no-run 2>/dev/null
binary=$(ls -t target/release/deps/scrub-* | grep -v '\.d$' | head -1)
mkdir -p target/tmp
echo "# $(date -u '+%F %T UTC'), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# image on: $(df --output=source,fstype target/tmp | tail -1)"
"$binary" target/tmp/scrub-bench.img "$rounds"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
