"""SGLang's own load-snapshot writers and reader, timed, for fpm-bench's `loads` section.

Runs the real code of the sglang==0.5.23 wheel through load_snapshot_driver.py (which
takes `ShmLoadSnapshotWriter`, `ShmLoadSnapshotReader` and `LoadSnapshot` out of
target/load-snapshot/).

  write PATH DP_SIZE PROCS RATE
      PROCS processes share the DP_SIZE ranks of one file at PATH, each rank written
      RATE times a second, every write timed (lock wait included). Prints
      {"writing": PATH}; then, per stdin line "mark NAME", starts phase NAME and prints
      {"mark": NAME}; at "end" (or EOF) prints, per phase, the writes' latency
      {"phases": {NAME: {"writes", "p50_us", "p99_us", "max_us"}}}.
  read PATH DP_SIZE RATE SECONDS
      SGLang's ShmLoadSnapshotReader(PATH, DP_SIZE).read_all() RATE times a second for
      SECONDS; prints the CPU per read and how long each read held the shared lock
      (timed around SGLang's own file_lock, which read_all holds while it decodes).
"""

import contextlib
import json
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_snapshot_driver as driver  # noqa: E402  (loads SGLang's module)

ls = driver.ls


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def stats_us(values):
    return {
        "writes": len(values),
        "p50_us": pct(values, 0.5) * 1e6 if values else None,
        "p99_us": pct(values, 0.99) * 1e6 if values else None,
        "max_us": max(values) * 1e6 if values else None,
    }


def writer(path, dp_size, ranks, rate, stop, out):
    writers = {r: ls.ShmLoadSnapshotWriter(path, dp_size, r) for r in ranks}
    samples = []  # (monotonic start, seconds)
    seq, period, start = 0, 1.0 / rate, time.monotonic()
    while not stop.is_set():
        seq += 1
        for r, w in writers.items():
            snap = driver.snapshot(0, r, seq)
            t = time.monotonic()
            w.write(snap)
            samples.append((t, time.monotonic() - t))
        time.sleep(max(0.0, start + seq * period - time.monotonic()))
    out.put(samples)


def write(path, dp_size, procs, rate):
    # The file is created whole before the processes attach (as SGLang's first writer does).
    ls.ShmLoadSnapshotWriter(path, dp_size, 0).close()
    stop, out = mp.Event(), mp.Queue()
    children = [
        mp.Process(target=writer, args=(path, dp_size, list(range(p, dp_size, procs)), rate, stop, out))
        for p in range(procs)
    ]
    for c in children:
        c.start()
    print(json.dumps({"writing": path}), flush=True)
    marks = []
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] == ["mark"]:
            marks.append((cmd[1], time.monotonic()))
            print(json.dumps({"mark": cmd[1]}), flush=True)
        elif cmd[:1] == ["end"]:
            break
    marks.append(("", time.monotonic()))
    stop.set()
    samples = [s for _ in children for s in out.get()]
    for c in children:
        c.join()
    phases = {}
    for (name, a), (_, b) in zip(marks, marks[1:]):
        phases[name] = stats_us([d for t, d in samples if a <= t < b])
    print(json.dumps({"phases": phases}), flush=True)


def read(path, dp_size, rate, seconds):
    held = []
    real_lock = ls.file_lock

    @contextlib.contextmanager
    def timed_lock(fd, lock_type):
        with real_lock(fd, lock_type):
            t = time.perf_counter()
            try:
                yield
            finally:
                held.append(time.perf_counter() - t)

    reader = ls.ShmLoadSnapshotReader(path, dp_size)
    ls.file_lock = timed_lock  # read_all looks it up in the module on every call
    n, ranks, period = 0, 0, 1.0 / rate
    cpu0, start = time.process_time(), time.monotonic()
    while time.monotonic() - start < seconds:
        ranks += len(reader.read_all())
        n += 1
        time.sleep(max(0.0, start + n * period - time.monotonic()))
    cpu = time.process_time() - cpu0
    ls.file_lock = real_lock
    print(json.dumps({
        "reads": n,
        "ranks_per_read": ranks / max(n, 1),
        "cpu_us_per_read": cpu / max(n, 1) * 1e6,
        "lock_held_p50_us": pct(held, 0.5) * 1e6,
        "lock_held_p99_us": pct(held, 0.99) * 1e6,
        "lock_held_max_us": max(held) * 1e6,
    }), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        read(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
