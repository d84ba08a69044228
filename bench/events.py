#!/usr/bin/env python3
"""Issue 13 measurements through a real mount (run by bench/events.sh, as root).

latency: a listener follows `vigilfs events MNT --follow --json`; the
program reads 4 KiB with O_DIRECT from a file whose reads fail (vigilfs
inject --fail-reads), one read every 20 ms. For each error event: event time
(stamped when the engine recorded it) to the moment the listener process
read its line, and the program's EIO return to that moment.

persist: 4 KiB write + fsync in a loop for DURATION seconds, counting
fsyncs, (a) alone, (b) while another thread floods read errors (O_DIRECT
reads at distinct offsets, every one an error event), on an image with an
event log, and (c) the same flood on an image made with --event-log-size 0
(events kept in memory only: nothing persisted). (b) against (c) is the
cost of persisting events; (a) is the fsync baseline of the same run.
"""
import json, mmap, os, subprocess, sys, tempfile, threading, time

V = sys.argv[1]
DURATION = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0


def run(*args):
    return subprocess.run([V, *args], check=True, capture_output=True, text=True).stdout


class Mount:
    def __init__(self, log_size=None):
        self.dir = tempfile.mkdtemp(prefix="vigilfs-bench-")
        self.img = os.path.join(self.dir, "disk.img")
        self.mnt = os.path.join(self.dir, "mnt")
        os.mkdir(self.mnt)
        mkfs = ["mkfs", self.img, "--size", "1G"]
        if log_size is not None:
            mkfs += ["--event-log-size", log_size]
        run(*mkfs)
        self.mount()

    def mount(self):
        run("mount", self.img, self.mnt, "--daemon", "--pid-file", os.path.join(self.dir, "pid"),
            "--log-file", os.path.join(self.dir, "log"))

    def umount(self):
        pid = int(open(os.path.join(self.dir, "pid")).read())
        subprocess.run(["umount", self.mnt], check=True)
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)

    def remount(self):
        self.umount()
        self.mount()

    def path(self, name):
        return os.path.join(self.mnt, name)


def failing_file(m, name, pages):
    with open(m.path(name), "wb") as f:
        f.write(b"\x07" * 4096 * pages)
    run("sync", m.mnt)
    m.remount()
    run("inject", m.mnt, "--fail-reads", "--class", "data")
    fd = os.open(m.path(name), os.O_RDONLY | os.O_DIRECT)
    return fd


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def latency():
    m = Mount()
    fd = failing_file(m, "victim", 4096)
    listener = subprocess.Popen([V, "events", m.mnt, "--follow", "--json"], stdout=subprocess.PIPE, text=True)
    received = {}
    def read():
        for line in listener.stdout:
            now = time.time_ns()
            event = json.loads(line)
            if event["kind"] == "error":
                received[event["offset"]] = (now, event["time"])
    reader = threading.Thread(target=read)
    reader.start()
    buf = mmap.mmap(-1, 4096)
    returned = {}
    for index in range(300):
        offset = index * 4096
        try:
            os.preadv(fd, [buf], offset)
        except OSError:
            returned[offset] = time.time_ns()
        time.sleep(0.02)
    time.sleep(1)
    os.close(fd)
    run("inject", m.mnt, "--clear")
    m.umount()
    reader.join()
    emit, app = [], []
    for offset, (got, stamp) in received.items():
        day, clock = stamp.rstrip("Z").split("T")
        whole, micros = clock.split(".")
        t = time.strptime(f"{day} {whole}", "%Y-%m-%d %H:%M:%S")
        emitted = (int(time.mktime(t) - time.timezone) * 1_000_000 + int(micros)) * 1000
        emit.append((got - emitted) / 1e3)
        if offset in returned:
            app.append((got - returned[offset]) / 1e3)
    print(f"latency: {len(emit)} error events of 300 failed reads")
    for name, values in (("emit -> listener", emit), ("app's EIO -> listener", app)):
        print(f"  {name:24} p50 {percentile(values, 50):8.0f} us  p90 {percentile(values, 90):8.0f} us"
              f"  p99 {percentile(values, 99):8.0f} us  max {max(values):8.0f} us")


def fsync_rate(m, flood):
    stop = threading.Event()
    floods = [0]
    def flooder():
        fd = failing_file_fd
        buf = mmap.mmap(-1, 4096)
        index = 0
        while not stop.is_set():
            try:
                os.preadv(fd, [buf], (index % 8192) * 4096)
            except OSError:
                floods[0] += 1
            index += 1
    failing_file_fd = None
    if flood:
        failing_file_fd = failing_file(m, "flood", 8192)
    thread = threading.Thread(target=flooder) if flood else None
    fd = os.open(m.path("fsynced"), os.O_WRONLY | os.O_CREAT, 0o644)
    block = b"\x01" * 4096
    if thread:
        thread.start()
    count = 0
    start = time.monotonic()
    while time.monotonic() - start < DURATION:
        os.pwrite(fd, block, (count % 256) * 4096)
        os.fsync(fd)
        count += 1
    elapsed = time.monotonic() - start
    stop.set()
    if thread:
        thread.join()
        os.close(failing_file_fd)
        run("inject", m.mnt, "--clear")
    os.close(fd)
    status = json.loads(run("status", m.mnt, "--json"))
    m.umount()
    return count / elapsed, floods[0] / elapsed, status["events"]


def persist():
    print(f"persist: {DURATION:.0f} s of 4 KiB write + fsync per case, each on a fresh 1 GiB image")
    results = {}
    for round_ in range(2):
        for case, log_size, flood in (("a: no flood, event log", None, False),
                                      ("b: error flood, event log", None, True),
                                      ("c: error flood, no event log (memory)", "0", True)):
            rate, errors, events = fsync_rate(Mount(log_size), flood)
            results.setdefault(case, []).append((rate, errors, events["records"], events["write_failures"]))
    for case, runs in results.items():
        rates = ", ".join(f"{rate:.0f}" for rate, _, _, _ in runs)
        floods = ", ".join(f"{errors:.0f}" for _, errors, _, _ in runs)
        records = ", ".join(f"{records}" for _, _, records, _ in runs)
        print(f"  {case:40} fsync/s {rates:16} errors/s {floods:16} events {records}")


if __name__ == "__main__":
    latency()
    persist()
