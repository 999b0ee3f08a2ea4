"""Python reference consumer for `fpm-bench`: the job fpm-exporter does, done the way
today's Python consumers do it (Dynamo's planner and recorder).

- pyzmq SUB, one socket connected to every rank endpoint, subscribed to everything;
- msgspec decode with the REAL module's ``ForwardPassMetrics`` type
  (``tests/py/fpm_real.py`` loads it from the sglang wheel);
- per rank: sequence-gap accounting, a latest-value table, and the real module's
  ``WelfordAccumulator`` for the same 14 fields fpm-exporter keeps statistics of
  (heartbeats are counted but, as in the planner, not folded into statistics).

Protocol with the harness (stdout, one JSON object per line):
- ``{"ready": true, "ranks": N}`` once a frame from every expected rank arrived;
- ``{"frames": N}`` (every frame so far, heartbeats included) for each ``count`` line
  on stdin, so a harness can time its own interval (fpm-bench's ``rates`` section);
  answered by a thread of its own, so the reply comes even while the drain loop never
  runs dry (at 100,000 frames/s it does not);
- ``{"frames": F, "iterations": I, "missed": M, "seconds": S, "rate": F/S}`` when the
  load is over: counting starts at the first iteration frame and stops after
  ``--idle-end`` seconds without one (S runs from the first to the last iteration);
  ``cpu_seconds`` is this process's CPU time over the same span.
Exits by itself after ``--max-seconds`` in any case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "py"))

import zmq  # noqa: E402

import fpm_real  # noqa: E402

FIELDS = 14


class RankStats:
    __slots__ = ("latest", "acc", "last_seq", "missed", "frames")

    def __init__(self, mod) -> None:
        self.latest = None
        self.acc = [mod.WelfordAccumulator() for _ in range(FIELDS)]
        self.last_seq = None
        self.missed = 0
        self.frames = 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", action="append", required=True)
    ap.add_argument("--idle-end", type=float, default=1.0)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    args = ap.parse_args()

    mod = fpm_real.load()
    decoder = mod._decoder  # msgspec.msgpack.Decoder(ForwardPassMetrics), as the module uses
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    for ep in args.endpoint:
        sock.connect(ep)

    expected = len(args.endpoint)
    ranks: dict[tuple[str, int], RankStats] = {}
    deadline = time.monotonic() + args.max_seconds
    ready = False
    frames = iterations = 0
    first = last = None
    cpu_first = cpu_last = 0.0
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    # Every frame so far; a one-element list so the answering thread reads it (an int
    # read under the GIL is consistent; the thread sleeps in readline otherwise).
    total = [0]
    out = threading.Lock()

    def answer() -> None:
        for line in sys.stdin:
            if line.strip() == "count":
                with out:
                    print(json.dumps({"frames": total[0]}), flush=True)

    threading.Thread(target=answer, daemon=True).start()
    while time.monotonic() < deadline:
        events = dict(poller.poll(100))
        if not events:
            if last is not None and time.monotonic() - last >= args.idle_end:
                break
            continue
        # Drain what is queued without polling per message (the fast consumer loop).
        while True:
            try:
                _topic, seq_b, payload = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            m = decoder.decode(payload)
            key = (m.worker_id, m.dp_rank)
            st = ranks.get(key)
            if st is None:
                st = ranks[key] = RankStats(mod)
            seq = int.from_bytes(seq_b, "big")
            if st.last_seq is not None and seq > st.last_seq + 1:
                st.missed += seq - st.last_seq - 1
            st.last_seq = seq
            st.frames += 1
            total[0] += 1
            if m.wall_time == 0.0:
                continue
            now = time.monotonic()
            if first is None:
                first = now
                cpu_first = time.process_time()
            last = now
            cpu_last = time.process_time()
            frames += 1
            iterations += 1
            st.latest = m
            s = m.scheduled_requests
            q = m.queued_requests
            a = st.acc
            a[0].add(m.wall_time)
            a[1].add(s.num_prefill_requests)
            a[2].add(s.sum_prefill_tokens)
            a[3].add(s.var_prefill_length)
            a[4].add(s.sum_prefill_kv_tokens)
            a[5].add(s.num_decode_requests)
            a[6].add(s.sum_decode_kv_tokens)
            a[7].add(s.var_decode_kv_tokens)
            a[8].add(q.num_prefill_requests)
            a[9].add(q.sum_prefill_tokens)
            a[10].add(q.var_prefill_length)
            a[11].add(q.num_decode_requests)
            a[12].add(q.sum_decode_kv_tokens)
            a[13].add(q.var_decode_kv_tokens)
        if not ready and len(ranks) >= expected:
            ready = True
            with out:
                print(json.dumps({"ready": True, "ranks": len(ranks)}), flush=True)
        if last is not None and time.monotonic() - last >= args.idle_end:
            break
    seconds = (last - first) if first is not None and last > first else 0.0
    missed = sum(st.missed for st in ranks.values())
    out.acquire()
    print(
        json.dumps(
            {
                "frames": frames,
                "iterations": iterations,
                "missed": missed,
                "seconds": seconds,
                "rate": frames / seconds if seconds > 0 else 0.0,
                "cpu_seconds": cpu_last - cpu_first,
            }
        ),
        flush=True,
    )
    sock.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
