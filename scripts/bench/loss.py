#!/usr/bin/env python3
"""Frames lost to the exporter's receive rounds, next to a prompt reader, in one run.

For each transport and rate: the real SGLang publisher (``_FpmPublisherThread`` from
the sglang 0.5.23 wheel, see tests/py/fpm_real.py) sends ``--bursts`` bursts of
``--seconds`` at that rate, out of idle (heartbeats in between), to two subscribers at
once: the fpm-exporter binary at its defaults (``--receive-delay 500ms``) and a pyzmq
SUB in a process of its own that reads every message as it comes (the prompt reader).
Prints, per case, what was sent and what each took in.

    bash scripts/test-deps.sh
    cargo build --release --bin fpm-exporter
    target/pyenv/bin/python scripts/bench/loss.py [--rates 1000,5000,20000] [--sndhwm 1000]

Bounded: every case ends by itself (bursts, then at most 10 s to settle).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
import fpm_real  # noqa: E402


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def prompt_reader(endpoint: str, ready, out, stop) -> None:
    """A pyzmq SUB reading every message at once; reports iterations seen."""
    import zmq

    fpm = fpm_real.load()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    seen = heartbeat = 0
    while not stop.is_set():
        if not poller.poll(50):
            continue
        while True:
            try:
                _, _, payload = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if fpm.decode(payload).wall_time > 0:
                seen += 1
            else:
                heartbeat += 1
                if heartbeat == 1:
                    ready.set()
    out.send(seen)
    sub.close(linger=0)
    ctx.term()


def metric(body: str, name: str) -> float:
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_case(exporter: str, transport: str, rate: int, args) -> str:
    fpm = fpm_real.load()
    import msgspec
    import zmq

    tmp = tempfile.mkdtemp(prefix="fpm-loss")
    if transport == "ipc":
        base = f"ipc://{tmp}/rank"
        endpoint = base + ".0"
    else:
        base = endpoint = f"tcp://127.0.0.1:{free_port()}"
    http = free_port()
    proc = subprocess.Popen(
        [exporter, "--endpoint", base, "--engine", "loss", "--listen", f"127.0.0.1:{http}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    plain = zmq.Context

    class Ctx(zmq.Context):
        def socket(self, kind, **kw):
            s = super().socket(kind, **kw)
            s.setsockopt(zmq.SNDHWM, args.sndhwm)
            return s

    zmq.Context = Ctx
    try:
        pub = fpm._FpmPublisherThread(endpoint, "w-loss", 0)
    finally:
        zmq.Context = plain
    pub.set_idle(True)
    ready, stop = mp.Event(), mp.Event()
    there, here = mp.Pipe()
    reader = mp.Process(target=prompt_reader, args=(endpoint, ready, here, stop), daemon=True)
    reader.start()

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
            return r.read().decode()

    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if metric(scrape(), "fpm_up") >= 1 and ready.is_set():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{transport}: exporter or prompt reader never saw the rank")
            time.sleep(0.1)
        frame = fpm.ForwardPassMetrics(
            worker_id="w-loss",
            dp_rank=0,
            wall_time=0.01,
            scheduled_requests=fpm.ScheduledRequestMetrics(num_decode_requests=2),
        )
        per_burst = int(rate * args.seconds)
        for b in range(args.bursts):
            if b:
                time.sleep(args.idle)
            start = time.monotonic()
            for i in range(per_burst):
                wait = start + i / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                pub.publish(msgspec.structs.replace(frame))
        while not pub._queue.empty():
            time.sleep(0.01)
        sent = args.bursts * per_burst
        time.sleep(1.0)
        body = scrape()
        stop.set()
        prompt = there.recv() if there.poll(10) else float("nan")
        seen = metric(body, "fpm_iterations_total")
        missed = metric(body, "fpm_missed_frames_total")
        unseen = metric(body, "fpm_reconnect_missed_frames_total")
        return (
            f"loss {transport} {rate:>6}/s x {args.seconds:g} s x {args.bursts} bursts, "
            f"SNDHWM {args.sndhwm}: sent {sent} | exporter seen {seen:.0f}, missed {missed:.0f}, "
            f"unseen {unseen:.0f} | prompt pyzmq SUB seen {prompt}"
        )
    finally:
        stop.set()
        pub.shutdown()
        proc.terminate()
        proc.wait(timeout=5)
        reader.join(timeout=5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exporter", default=os.path.join(ROOT, "target/release/fpm-exporter"))
    ap.add_argument("--rates", default="1000,5000,20000")
    ap.add_argument("--transports", default="ipc,tcp")
    ap.add_argument("--sndhwm", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--bursts", type=int, default=2)
    ap.add_argument("--idle", type=float, default=2.0)
    args = ap.parse_args()
    if not os.access(args.exporter, os.X_OK):
        print(f"no exporter at {args.exporter}: cargo build --release --bin fpm-exporter")
        return 2
    for transport in args.transports.split(","):
        for rate in args.rates.split(","):
            print(run_case(args.exporter, transport, int(rate), args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
