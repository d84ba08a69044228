#!/usr/bin/env python3
"""Per-FUSE-request breakdown of small operations through a vigilfs mount
(issue 16, "measure first"). Run as root.

For each workload the kernel's fuse tracepoints (fuse_request_send,
fuse_request_end) and the daemon's read/writev/fdatasync syscalls are
traced with ftrace while the workload runs alone on the mount:

  write_fsync  N x (pwrite 4 KiB at a random aligned offset of a 64 MiB
               file + fsync), the fio randwrite --fsync=1 pattern
  create       N x (open O_CREAT, write 4 KiB, fsync, close): the
               small-file pattern of bench/mount.sh
  stat         N x stat of the files just created
  unlink       N x unlink of them
  sqlite       N x one-row INSERT transaction in SQLite (WAL,
               synchronous=FULL), bench/mount.sh's SQLite pattern
  pgbench      N TPC-B-like transactions of pgbench -c 2 (bench/mount.sh's
               PostgreSQL pattern, scale 5), when PostgreSQL and its
               `postgres` user are installed

and for each it prints, per operation of the workload: the FUSE requests
by opcode (count per operation), each one's median round trip (queued by
the caller's kernel to the reply reaching the kernel), how much of that
the daemon spent on it (its read of /dev/fuse returning to its reply's
writev, on the same thread), the device flushes (fdatasync of the image)
per operation, the daemon's CPU time per operation (all its threads, from
/proc, in clock ticks: read it over a few thousand operations), and the
wall time per operation seen by the program.

Usage: breakdown.py VIGILFS_BINARY WORKDIR [N] [MOUNT_OPTIONS]
WORKLOADS="sqlite pgbench" runs only those (default: all of them).
WORKDIR must be on tmpfs (the image goes there). Tracing costs time: the
absolute figures are inflated; the shares and counts are what to read.
"""
import collections, glob, os, pwd, random, re, shutil, sqlite3, statistics, subprocess, sys, time

V, WORK = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
OPTIONS = sys.argv[4] if len(sys.argv) > 4 else ""
WORKLOADS = os.environ.get("WORKLOADS", "write_fsync create stat unlink sqlite pgbench").split()
TRACING = "/sys/kernel/tracing"
OPCODES = {1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 10: "UNLINK", 14: "OPEN",
           15: "READ", 16: "WRITE", 18: "RELEASE", 20: "FSYNC", 22: "GETXATTR", 25: "FLUSH",
           31: "GETLK", 32: "SETLK", 33: "SETLKW", 35: "CREATE", 43: "FALLOCATE", 46: "LSEEK",
           42: "BATCH_FORGET", 44: "READDIRPLUS", 52: "STATX"}


def tracefs(name, value):
    with open(os.path.join(TRACING, name), "w") as f:
        f.write(value)


def start_trace(daemon_tids, connection):
    tracefs("tracing_on", "0")
    tracefs("trace", "")
    tracefs("buffer_size_kb", "65536")
    tracefs("set_event", "")
    # Only this mount's requests: other FUSE mounts may be busy beside it.
    for event in ["fuse/fuse_request_send", "fuse/fuse_request_end"]:
        tracefs(f"events/{event}/filter", f"connection == {connection}")
        tracefs(f"events/{event}/enable", "1")
    syscalls = ["sys_exit_read", "sys_enter_writev", "sys_enter_fdatasync",
                "sys_exit_fdatasync", "sys_enter_fsync"]
    pids = " || ".join(f"common_pid == {tid}" for tid in daemon_tids)
    for event in syscalls:
        path = f"events/syscalls/{event}"
        tracefs(f"{path}/filter", pids)
        tracefs(f"{path}/enable", "1")
    tracefs("tracing_on", "1")


def stop_trace():
    tracefs("tracing_on", "0")
    with open(os.path.join(TRACING, "trace")) as f:
        text = f.read()
    for event in ["sys_exit_read", "sys_enter_writev", "sys_enter_fdatasync",
                  "sys_exit_fdatasync", "sys_enter_fsync"]:
        tracefs(f"events/syscalls/{event}/enable", "0")
        tracefs(f"events/syscalls/{event}/filter", "0")
    for event in ["fuse/fuse_request_send", "fuse/fuse_request_end"]:
        tracefs(f"events/{event}/enable", "0")
        tracefs(f"events/{event}/filter", "0")
    tracefs("trace", "")
    return text


LINE = re.compile(r"^\s*(.+?)-(\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[\d+\]\s+(?:\S+\s+)?(\d+\.\d+): (.*)$")


def analyse(text, ops):
    sends, ends = {}, {}
    last_read = {}  # daemon tid -> time its latest read of /dev/fuse returned
    daemon_time = {}
    flushes, flush_time, flush_started = 0, 0.0, {}
    for line in text.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        _, tid, stamp, rest = match.groups()
        tid, stamp = int(tid), float(stamp)
        if rest.startswith("fuse_request_send:"):
            unique = int(re.search(r"req (\d+)", rest).group(1))
            opcode = int(re.search(r"opcode (\d+)", rest).group(1))
            sends[unique] = (stamp, opcode)
        elif rest.startswith("fuse_request_end:"):
            unique = int(re.search(r"req (\d+)", rest).group(1))
            ends[unique] = stamp
            if tid in last_read:
                daemon_time[unique] = stamp - last_read[tid]
        elif rest.startswith("sys_read ->"):
            last_read[tid] = stamp
        elif rest.startswith("sys_fdatasync("):
            flush_started[tid] = stamp
            flushes += 1
        elif rest.startswith("sys_fdatasync ->") and tid in flush_started:
            flush_time += stamp - flush_started.pop(tid)
    by_opcode = collections.defaultdict(lambda: {"count": 0, "round": [], "daemon": []})
    for unique, (sent, opcode) in sends.items():
        row = by_opcode[OPCODES.get(opcode, str(opcode))]
        row["count"] += 1
        if unique in ends:
            row["round"].append(ends[unique] - sent)
        if unique in daemon_time:
            row["daemon"].append(daemon_time[unique])
    return by_opcode, flushes, flush_time


def us(seconds):
    return f"{seconds * 1e6:,.1f}"


def cpu_seconds(pid):
    """User and system CPU time of process `pid`, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name, text, ops, wall, daemon_cpu):
    by_opcode, flushes, flush_time = analyse(text, ops)
    print(f"\n**{name}**: {ops} operations, {us(wall / ops)} µs each (wall, traced); "
          f"the daemon's CPU time {us(daemon_cpu / ops)} µs per operation; "
          f"device flushes (fdatasync of the image) {flushes / ops:.2f} per operation, "
          f"{us(flush_time / max(flushes, 1))} µs each")
    print()
    print("| request | per operation | round trip median µs | daemon median µs | "
          "round trip total per operation µs |")
    print("|---|---|---|---|---|")
    total = 0.0
    for opcode, row in sorted(by_opcode.items(), key=lambda item: -item[1]["count"]):
        if row["count"] < ops / 20:
            continue
        round_trip = statistics.median(row["round"]) if row["round"] else 0.0
        daemon = statistics.median(row["daemon"]) if row["daemon"] else 0.0
        share = sum(row["round"]) / ops
        total += share
        print(f"| {opcode} | {row['count'] / ops:.2f} | {us(round_trip)} | {us(daemon)} | "
              f"{us(share)} |")
    print(f"| (all requests) | | | | {us(total)} |")


def pgbench(mnt, traced):
    """PostgreSQL's server with its data directory on the mount, then N
    transactions of `pgbench -c 2 -j 2` traced (bench/mount.sh's pattern)."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        binaries = []
    if not binaries:
        print("\n**pgbench**: skipped, PostgreSQL or its `postgres` user is not installed")
        return
    binary = binaries[-1]
    data = os.path.join(mnt, "pgdata")
    os.mkdir(data)
    shutil.chown(data, "postgres")
    log = os.path.join(WORK, "postgres.log")
    open(log, "w").close()
    shutil.chown(log, "postgres")

    def as_postgres(*command):
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    connect = ["-h", "/tmp", "-p", "54329"]
    as_postgres(f"{binary}/initdb", "-D", data, "-A", "trust")
    as_postgres(f"{binary}/pg_ctl", "-D", data, "-o", "-k /tmp -p 54329 -c listen_addresses=''",
                "-l", log, "-w", "start")
    try:
        as_postgres(f"{binary}/pgbench", *connect, "-i", "-s", "5", "postgres")
        per_client = max(N // 2, 1)
        traced("pgbench -c 2 transaction (TPC-B-like, scale 5)",
               lambda _: as_postgres(f"{binary}/pgbench", *connect, "-c", "2", "-j", "2",
                                     "-t", str(per_client), "postgres"),
               [None], operations=2 * per_client)
    finally:
        as_postgres(f"{binary}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")


def main():
    image = os.path.join(WORK, "breakdown.img")
    mnt = os.path.join(WORK, "mnt")
    pidfile = os.path.join(WORK, "pid")
    os.makedirs(mnt, exist_ok=True)
    # A fresh image each run: an earlier run's files would be in the way.
    if os.path.exists(image):
        os.remove(image)
    command = [V, "mount", image, mnt, "--size", "2G", "--daemon", "--pid-file", pidfile]
    if OPTIONS:
        command += ["-o", OPTIONS]
    subprocess.run(command, check=True)
    pid = int(open(pidfile).read())
    # The kernel names a FUSE connection by its superblock's device number.
    connection = os.minor(os.stat(mnt).st_dev)

    def traced(name, each, items, operations=None):
        """Runs `each` on every item alone on the mount, traced, and
        reports it as `name`, per item or per `operations` if given."""
        start_trace([int(t) for t in os.listdir(f"/proc/{pid}/task")], connection)
        started, cpu = time.perf_counter(), cpu_seconds(pid)
        for item in items:
            each(item)
        wall, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
        report(name, stop_trace(), operations or len(items), wall, cpu)

    try:
        block = os.urandom(4096)
        if "write_fsync" in WORKLOADS:
            fd = os.open(os.path.join(mnt, "rand"), os.O_CREAT | os.O_RDWR, 0o644)
            for at in range(0, 64 << 20, 1 << 20):
                os.pwrite(fd, block * 256, at)
            os.fsync(fd)
            rng = random.Random(16)
            offsets = [rng.randrange(0, 16384) * 4096 for _ in range(N)]

            def write_and_sync(offset):
                os.pwrite(fd, block, offset)
                os.fsync(fd)

            traced("4 KiB pwrite + fsync", write_and_sync, offsets)
            os.close(fd)

        root = os.path.join(mnt, "small")
        os.mkdir(root)
        names = [os.path.join(root, f"f{at}") for at in range(N)]

        def create(name):
            created = os.open(name, os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(created, block)
            os.fsync(created)
            os.close(created)

        if {"create", "stat", "unlink"} & set(WORKLOADS):
            # stat and unlink need the files: they are created untraced
            # when create itself is not asked for.
            if "create" in WORKLOADS:
                traced("create + 4 KiB write + fsync + close", create, names)
            else:
                for name in names:
                    create(name)
            if "stat" in WORKLOADS:
                traced("stat (just created)", os.stat, names)
            if "unlink" in WORKLOADS:
                traced("unlink", os.unlink, names)

        if "sqlite" in WORKLOADS:
            database = sqlite3.connect(os.path.join(mnt, "bench.db"), isolation_level=None)
            database.execute("PRAGMA journal_mode=WAL")
            database.execute("PRAGMA synchronous=FULL")
            database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, value TEXT)")
            row = "x" * 100

            def insert(at):
                database.execute("BEGIN")
                database.execute("INSERT INTO t VALUES (?, ?)", (at, row))
                database.execute("COMMIT")

            traced("SQLite one-row transaction (WAL, synchronous=FULL)", insert, range(N))
            database.close()

        if "pgbench" in WORKLOADS:
            pgbench(mnt, traced)
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
        for _ in range(200):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.05)


main()
