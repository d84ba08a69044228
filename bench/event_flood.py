#!/usr/bin/env python3
"""One file's read error over and over: what it does to the event log.

For each vigilfs binary given, on a fresh 64 MiB image (default event log:
992 slots) on a tmpfs: one failing read of a file `other` (the event that
came before), then SECONDS of failing O_DIRECT reads of a file `flood`, as
fast as one process issues them. Reports the reads that failed, the
records the flood made, and whether `other`'s event is still in the log
after an unmount and a mount. Binaries run in turn, ROUNDS times.

Usage: python3 bench/event_flood.py WORKDIR SECONDS ROUNDS BINARY...
"""

import json
import mmap
import os
import subprocess
import sys
import time


def run(*command, check=True):
    return subprocess.run(command, check=check, capture_output=True, text=True)


def failing_reads(path, seconds):
    """O_DIRECT reads of the first 4 KiB for `seconds`; returns how many failed."""
    buffer = mmap.mmap(-1, 4096)
    failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            os.preadv(fd, [buffer], 0)
        except OSError:
            failed += 1
        finally:
            os.close(fd)
    return failed


def one(binary, work, seconds):
    image = os.path.join(work, "flood.img")
    mountpoint = os.path.join(work, "mnt")
    os.makedirs(mountpoint, exist_ok=True)
    if os.path.exists(image):
        os.unlink(image)
    run(binary, "mkfs", image, "--size", "64M")
    run(binary, "mount", image, mountpoint, "--daemon")
    try:
        for name in ("other", "flood"):
            with open(os.path.join(mountpoint, name), "wb") as file:
                file.write(b"x" * (1 << 20))
                os.fsync(file.fileno())
        run(binary, "inject", mountpoint, "--fail-reads", "--path", "other", "--drop-caches")
        failing_reads(os.path.join(mountpoint, "other"), 0.01)
        run(binary, "inject", mountpoint, "--clear")
        run(binary, "inject", mountpoint, "--fail-reads", "--path", "flood", "--drop-caches")
        failed = failing_reads(os.path.join(mountpoint, "flood"), seconds)
        run(binary, "inject", mountpoint, "--clear")
    finally:
        run("umount", mountpoint, check=False)
        time.sleep(1)
    # The image's own log, offline: what survived.
    listed = run(binary, "events", image, "--json").stdout.splitlines()
    events = [json.loads(line) for line in listed if line.strip()]
    errors = [event for event in events if event.get("kind") == "error"]
    flood = [event for event in errors if event.get("path") == "/flood"]
    kept = any(event.get("path") == "/other" for event in errors)
    lost = sum(event.get("count") or 0 for event in events if event.get("kind") == "lost")
    counted = sum(event.get("count") or 0 for event in flood)
    return failed, len(flood), counted, lost, kept


def main():
    work, seconds, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    binaries = sys.argv[4:]
    print("binary | failed reads | flood records in the log | their count | "
          "errors in lost events | the earlier event kept")
    for _ in range(rounds):
        for binary in binaries:
            failed, records, counted, lost, kept = one(binary, work, seconds)
            print(f"{binary} | {failed} | {records} | {counted} | {lost} | {kept}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
