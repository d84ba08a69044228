#!/usr/bin/env bash
# Issue 13 measurements: emit-to-listener latency and the cost of
# persisting events under an fsync-heavy workload (see bench/events.py).
# Needs root and /dev/fuse. Usage: sudo bash bench/events.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p vigilfs-cli
python3 bench/events.py "${CARGO_TARGET_DIR:-target}/release/vigilfs" "${1:-10}"
