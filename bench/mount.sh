#!/usr/bin/env bash
# The mounted-filesystem benchmark: fio and a small-file script against
#   vigilfs      (vigilfs mount, image file in tmpfs)
#   ext4-loop    (kernel ext4 on a loop device, image file in the same tmpfs)
#   fuse2fs      (fuse2fs on an ext4 image file in the same tmpfs)
#   passthrough  (libfuse's passthrough_ll example over a tmpfs directory)
# in one run, side by side, medians of RUNS runs; prints a markdown table
# with each result as a ratio to ext4-loop and to passthrough. Besides fio
# and the small-file script: SQLite (WAL, synchronous=FULL) transactions/s
# and pgbench tps (PostgreSQL's own server, data directory on the mount,
# 2 clients).
#
# Usage: sudo bash bench/mount.sh [RUNS]    (default 3)
#
# SYSTEMS="vigilfs ext4-loop": measure only these (default: all four);
# vigilfs-crashable is vigilfs mounted with -o crashable (the crash lab's
# volatile device cache).
# BASELINE=PATH: also measure "vigilfs-before", the same mount served by
# PATH, a vigilfs binary built from an earlier commit.
# WORKLOADS="sqlite pgbench": run only these groups (default: all of fio,
# small, replace, sqlite, pgbench, bulk, scattered), say to re-measure a
# noisy row on its own. bulk: a write then lseek(SEEK_END) on a fragmented
# file, and pgbench's initialisation (a bulk load) in rows/s. scattered:
# 16 random 4 KiB writes of a 64 MiB file then an fsync, for 30 s (a
# database's page writes; the file fragments as it goes).
# Needs root, /dev/fuse, fio, fuse3, fuse2fs, libfuse3-dev, gcc, pkg-config,
# python3 with sqlite3, and PostgreSQL's server binaries (package
# postgresql: initdb, pg_ctl, pgbench) and its `postgres` user.
set -euo pipefail

runs=${1:-3}
TMPFS_SIZE=12G source "$(dirname "$0")/lib.sh"
# PostgreSQL runs as its own user and must reach its data directory.
chmod 755 "$work"

# passthrough_ll, built from the source libfuse3-dev ships.
source=$(dpkg -L libfuse3-dev | grep 'examples/passthrough_ll.c$')
gcc -O2 -Wall "$source" $(pkg-config fuse3 --cflags --libs) -o "$work/passthrough_ll"

mount_system() {
    local system=$1 mountpoint="$work/mnt/$1"
    mkdir -p "$mountpoint"
    case $system in
        vigilfs)
            rm -f "$work/tmpfs/vigilfs.img"
            "$vigilfs" mount "$work/tmpfs/vigilfs.img" "$mountpoint" --size 4G --daemon ;;
        vigilfs-crashable)
            rm -f "$work/tmpfs/vigilfs.img"
            "$vigilfs" mount "$work/tmpfs/vigilfs.img" "$mountpoint" --size 4G -o crashable --daemon ;;
        vigilfs-before)
            rm -f "$work/tmpfs/vigilfs.img"
            "$BASELINE" mount "$work/tmpfs/vigilfs.img" "$mountpoint" --size 4G --daemon ;;
        ext4-loop)
            rm -f "$work/tmpfs/ext4.img"; truncate -s 4G "$work/tmpfs/ext4.img"
            mkfs.ext4 -q -F "$work/tmpfs/ext4.img"
            mount -o loop "$work/tmpfs/ext4.img" "$mountpoint" ;;
        fuse2fs)
            rm -f "$work/tmpfs/fuse2fs.img"; truncate -s 4G "$work/tmpfs/fuse2fs.img"
            mkfs.ext4 -q -F "$work/tmpfs/fuse2fs.img"
            fuse2fs -o rw,allow_other "$work/tmpfs/fuse2fs.img" "$mountpoint" ;;
        passthrough)
            rm -rf "$work/tmpfs/passthrough"; mkdir -p "$work/tmpfs/passthrough"
            "$work/passthrough_ll" -o source="$work/tmpfs/passthrough",allow_other "$mountpoint" ;;
    esac
}

unmount_system() {
    local mountpoint="$work/mnt/$1"
    umount "$mountpoint"
    # vigilfs --daemon finishes its clean unmount after umount returns.
    for _ in $(seq 1 100); do
        mountpoint -q "$mountpoint" || break
        sleep 0.1
    done
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

fio_value() { # job-name rw-kind field  (reads fio's JSON on stdin)
    python3 -c '
import json, sys
job = json.load(sys.stdin)["jobs"][0]
kind, field = sys.argv[1], sys.argv[2]
value = job[kind][field]
print(value / 1024 if field == "bw" else value)' "$1" "$2"
}

run_fio() { # directory name rw bs size extra...
    local directory=$1 name=$2 rw=$3 bs=$4 size=$5; shift 5
    fio --output-format=json --name="$name" --directory="$directory" --rw="$rw" --bs="$bs" \
        --size="$size" --ioengine=psync --numjobs=1 "$@"
}

small_files() { # directory → "create/s stat/s stat-again/s unlink/s"
    python3 - "$1" <<'PY'
import os, sys, time
root = os.path.join(sys.argv[1], "small")
os.mkdir(root)
count = 2000
data = b"x" * 4096
started = time.perf_counter()
for at in range(count):
    fd = os.open(os.path.join(root, f"f{at}"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
create = count / (time.perf_counter() - started)
started = time.perf_counter()
for at in range(count):
    os.stat(os.path.join(root, f"f{at}"))
stat = count / (time.perf_counter() - started)
# Again: now every entry and attribute is in the kernel's cache (the first
# pass asked a FUSE server for each file's attributes, which its write
# invalidated).
started = time.perf_counter()
for at in range(count):
    os.stat(os.path.join(root, f"f{at}"))
stat_cached = count / (time.perf_counter() - started)
started = time.perf_counter()
for at in range(count):
    os.unlink(os.path.join(root, f"f{at}"))
unlink = count / (time.perf_counter() - started)
os.rmdir(root)
print(f"{create:.1f} {stat:.1f} {stat_cached:.1f} {unlink:.1f}")
PY
}

replace_files() { # directory → "rename-over/s truncate-rewrite/s"
    # A program replacing a file without fsync, as editors and tools do:
    # a new copy renamed over the old one, and a truncate to nothing
    # rewritten in place. vigilfs writes the new data back before the
    # rename's commit and at the truncated file's close (ext4's
    # auto_da_alloc starts that writeback without waiting for it).
    python3 - "$1" <<'PY'
import os, sys, time
root = os.path.join(sys.argv[1], "replace")
os.mkdir(root)
count = 500
data = b"r" * 65536
target = os.path.join(root, "f")
copy = os.path.join(root, "f.tmp")
started = time.perf_counter()
for _ in range(count):
    fd = os.open(copy, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.close(fd)
    os.rename(copy, target)
rename_over = count / (time.perf_counter() - started)
rewritten = os.path.join(root, "g")
with open(rewritten, "wb") as file:
    file.write(data)
started = time.perf_counter()
for _ in range(count):
    fd = os.open(rewritten, os.O_TRUNC | os.O_WRONLY)
    os.write(fd, data)
    os.close(fd)
truncate_rewrite = count / (time.perf_counter() - started)
for name in os.listdir(root):
    os.unlink(os.path.join(root, name))
os.rmdir(root)
print(f"{rename_over:.1f} {truncate_rewrite:.1f}")
PY
}

sqlite_tps() { # directory → transactions/s
    python3 - "$1" <<'PY'
import os, sqlite3, sys, time
path = os.path.join(sys.argv[1], "bench.sqlite")
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)")
count = 3000
started = time.perf_counter()
for at in range(count):
    db.execute("BEGIN")
    db.execute("INSERT INTO t (payload) VALUES (?)", (os.urandom(200),))
    db.execute("COMMIT")
print(f"{count / (time.perf_counter() - started):.1f}")
db.close()
PY
}

pg_start() { # directory: initdb there and start the server (sets pg_*)
    pg_data="$1/pgdata" pg_log="/tmp/vigilfs-bench-pg.$$.log"
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
    mkdir -p "$pg_data" && chown postgres "$pg_data"
    touch "$pg_log" && chown postgres "$pg_log"
    runuser -u postgres -- "$pg_bin/initdb" -D "$pg_data" -A trust >/dev/null
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -o "-k /tmp -p 54329 -c listen_addresses=''" \
        -l "$pg_log" -w start >/dev/null
}

pg_stop() { # the server pg_start started, and its files
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null
    rm -rf "$pg_data" "$pg_log"
}

pgbench_tps() { # directory → tps (2 clients, 20 s)
    pg_start "$1"
    runuser -u postgres -- "$pg_bin/pgbench" -h /tmp -p 54329 -i -s 5 postgres >/dev/null 2>&1
    runuser -u postgres -- "$pg_bin/pgbench" -h /tmp -p 54329 -c 2 -j 2 -T 20 postgres 2>/dev/null |
        awk '/^tps/ { print $3; exit }'
    pg_stop
}

stat_after_write() { # directory → size lookups/s after a write, fragmented 64 MiB file
    # What PostgreSQL does before extending a relation (mdnblocks): a
    # write, then lseek(SEEK_END), which makes the kernel ask the daemon
    # for the attributes the write invalidated. The file is fragmented as
    # rewrites leave a database's files.
    python3 - "$1" <<'PY'
import os, random, sys, time
path = os.path.join(sys.argv[1], "fragmented")
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.pwrite(fd, b"a" * (64 << 20), 0)
random.seed(1)
for _ in range(8000):
    os.pwrite(fd, b"r" * 4096, random.randrange(0, 64 << 20, 8192))
os.fsync(fd)
count = 2000
started = time.perf_counter()
for at in range(count):
    os.pwrite(fd, b"q" * 8192, (at % 8000) * 8192)
    os.lseek(fd, 0, os.SEEK_END)
print(f"{count / (time.perf_counter() - started):.1f}")
os.close(fd)
os.unlink(path)
PY
}

pgbench_init_rows() { # directory → rows/s of `pgbench -i -s 5` (a bulk load)
    local started
    pg_start "$1"
    started=$(date +%s.%N)
    runuser -u postgres -- "$pg_bin/pgbench" -h /tmp -p 54329 -i -s 5 postgres >/dev/null 2>&1
    python3 -c "import sys; print(f'{500000 / (float(sys.argv[2]) - float(sys.argv[1])):.1f}')" \
        "$started" "$(date +%s.%N)"
    pg_stop
}

wanted() { [[ " ${WORKLOADS:-fio small replace sqlite pgbench bulk scattered} " == *" $1 "* ]]; }

results="$work/results"
: > "$results"
read -r -a systems <<< "${SYSTEMS:-vigilfs ext4-loop fuse2fs passthrough}"
if [ -n "${BASELINE:-}" ]; then systems=(vigilfs-before "${systems[@]}"); fi
for run in $(seq 1 "$runs"); do
    for system in "${systems[@]}"; do
        mount_system "$system"
        directory="$work/mnt/$system"
        if wanted fio; then
            value=$(run_fio "$directory" seq write 1M 1G --end_fsync=1 | fio_value write bw)
            echo "$system seq_write_MiBps $value" >> "$results"
            drop_caches
            value=$(run_fio "$directory" seq read 1M 1G | fio_value read bw)
            echo "$system seq_read_MiBps $value" >> "$results"
            value=$(run_fio "$directory" rand randread 4k 256M --time_based --runtime=10 | fio_value read iops)
            echo "$system rand_read_iops $value" >> "$results"
            value=$(run_fio "$directory" randw randwrite 4k 256M --fsync=1 --time_based --runtime=10 | fio_value write iops)
            echo "$system rand_write_fsync_iops $value" >> "$results"
            rm -f "$directory"/seq* "$directory"/rand* "$directory"/randw*
        fi
        if wanted small; then
            read -r create stat stat_cached unlink < <(small_files "$directory")
            echo "$system create_fsync_per_s $create" >> "$results"
            echo "$system stat_per_s $stat" >> "$results"
            echo "$system stat_cached_per_s $stat_cached" >> "$results"
            echo "$system unlink_per_s $unlink" >> "$results"
        fi
        if wanted replace; then
            read -r rename_over truncate_rewrite < <(replace_files "$directory")
            echo "$system rename_over_per_s $rename_over" >> "$results"
            echo "$system truncate_rewrite_per_s $truncate_rewrite" >> "$results"
        fi
        if wanted sqlite; then
            echo "$system sqlite_tps $(sqlite_tps "$directory")" >> "$results"
            rm -f "$directory"/bench.sqlite*
        fi
        if wanted pgbench; then
            echo "$system pgbench_tps $(pgbench_tps "$directory")" >> "$results"
        fi
        if wanted scattered; then
            value=$(run_fio "$directory" scattered randwrite 4k 64M --fsync=16 --time_based --runtime=30 | fio_value write iops)
            echo "$system scattered_write_fsync16_iops $value" >> "$results"
            rm -f "$directory"/scattered*
        fi
        if wanted bulk; then
            echo "$system stat_after_write_per_s $(stat_after_write "$directory")" >> "$results"
            echo "$system pgbench_init_rows_per_s $(pgbench_init_rows "$directory")" >> "$results"
        fi
        unmount_system "$system"
        echo "run $run: $system done" >&2
    done
done

python3 - "$results" <<'PY'
import collections, statistics, sys
values = collections.defaultdict(list)
for line in open(sys.argv[1]):
    fields = line.split()
    if len(fields) != 3:
        # A measurement that produced nothing (pgbench's server did not
        # start, say): it shows as missing, the rest stands.
        print(f"missing: {line.strip()}", file=sys.stderr)
        continue
    system, name, value = fields
    values[(system, name)].append(float(value))
order = ["vigilfs-before", "vigilfs", "vigilfs-crashable", "ext4-loop", "fuse2fs", "passthrough"]
systems = [s for s in order if any(system == s for system, _ in values)]
others = [s for s in systems if s != "vigilfs"]
names = ["seq_write_MiBps", "seq_read_MiBps", "rand_read_iops", "rand_write_fsync_iops",
         "create_fsync_per_s", "stat_per_s", "stat_cached_per_s", "unlink_per_s",
         "rename_over_per_s", "truncate_rewrite_per_s", "sqlite_tps", "pgbench_tps",
         "stat_after_write_per_s", "pgbench_init_rows_per_s", "scattered_write_fsync16_iops"]
print("| workload | " + " | ".join(systems) + " | "
      + " | ".join(f"vigilfs / {s}" for s in others) + " |")
print("|---|" + "---|" * (len(systems) + len(others)))
for name in names:
    if not any(values[(s, name)] for s in systems):
        continue
    median = {s: statistics.median(values[(s, name)]) if values[(s, name)] else None
              for s in systems}
    cells = " | ".join("-" if median[s] is None else f"{median[s]:,.0f}" for s in systems)
    ratios = " | ".join(
        "-" if median["vigilfs"] is None or not median[s] else f"{median['vigilfs'] / median[s]:.2f}x"
        for s in others)
    print(f"| {name} | {cells} | {ratios} |")
PY
