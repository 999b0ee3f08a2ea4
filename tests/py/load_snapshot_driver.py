"""SGLang's own load-snapshot writer, reader and /v1/loads handler, for tests.

Runs the real code of the sglang==0.5.23 wheel, taken out by scripts/test-deps.sh into
target/load-snapshot/: `ShmLoadSnapshotWriter` and `LoadSnapshot` (load_snapshot.py),
and the endpoint function `get_loads` with `_format_loads_prometheus` (v1_loads.py).
Only the imports those two files make of the rest of SGLang and of FastAPI are stood
in for (none of them is called on the paths used here but `get_parallel`, whose
answer is given, and `HTTPException`/`Response`, plain carriers).

Usage: load_snapshot_driver.py DIR ENGINES RANKS RATE SECONDS
  Writes ENGINES x RANKS slots (files DIR/sglang_loads_<id>_<digest>.shm) at RATE
  snapshots/s per rank for SECONDS, printing {"writing": {id: path}} first; then one
  last snapshot per rank, then {"expected": {...}}: for every engine, every include
  and dp_rank case, what SGLang's handler returns (JSON document or Prometheus text,
  or the error it raises), read back with SGLang's ShmLoadSnapshotReader. Then waits
  for stdin to close.
"""

import asyncio
import itertools
import json
import os
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = os.path.join(ROOT, "target", "load-snapshot")


def stand_in(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load(name, path):
    m = types.ModuleType(name)
    m.__file__ = path
    sys.modules[name] = m  # before exec: `from __future__ import annotations`
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), m.__dict__)
    return m


class Parallel:
    tp_size = 1
    pp_size = 1
    attn_dp_enabled = False
    num_dp_ranks = 1


class HTTPException(Exception):
    def __init__(self, status_code, detail=None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class Response:
    def __init__(self, content=None, media_type=None, status_code=200):
        self.content, self.media_type, self.status_code = content, media_type, status_code


class APIRouter:
    def get(self, _path):
        return lambda f: f


for pkg in ("sglang", "sglang.srt", "sglang.srt.managers", "sglang.srt.entrypoints", "sglang.srt.utils"):
    stand_in(pkg, __path__=[])
stand_in("sglang.srt.environ", envs=None)
stand_in("sglang.srt.runtime_context", get_parallel=lambda: Parallel, get_serving=None)
stand_in("sglang.srt.utils.network", is_zmq_endpoint_ipv6=None, restrict_zmq_peers=None, zmq_connect=None)
sys.modules["sglang.srt.utils"].get_device_name = lambda: None
stand_in("sglang.version", __version__="0.5.23")
stand_in("fastapi", APIRouter=APIRouter, Depends=lambda f: None, HTTPException=HTTPException)
stand_in("fastapi.responses", Response=Response)

ls = load("sglang.srt.managers.load_snapshot", os.path.join(MODULES, "load_snapshot.py"))
v1 = load("sglang.srt.entrypoints.v1_loads", os.path.join(MODULES, "v1_loads.py"))


class TokenizerManager:
    """`TokenizerControlMixin.get_loads` (tokenizer_control_mixin.py), on SGLang's reader."""

    metrics_collector = None

    def __init__(self, reader, dp_size):
        self.load_snapshot_reader, self.elastic_worker_count = reader, dp_size

    async def get_loads(self, include=None, dp_rank=None):
        if dp_rank is not None and (dp_rank < 0 or dp_rank >= self.elastic_worker_count):
            return []
        reader = self.load_snapshot_reader
        if dp_rank is not None:
            load = reader.read(dp_rank)
            return [load] if load is not None else []
        return reader.read_all()


def snapshot(engine, rank, seq):
    """A snapshot whose fields tie to each other (a torn read would break the tie);
    sections vary by rank so every presence case is seen."""
    L = ls
    return L.LoadSnapshot(
        timestamp=time.time(),
        dp_rank=rank,
        num_running_reqs=seq,
        num_waiting_reqs=seq % 7,
        num_waiting_uncached_tokens=seq * 3,
        num_used_tokens=7 * seq + rank,
        num_total_tokens=7 * seq + rank + 100,
        num_active_tokens=7 * seq + rank + 50,
        num_prealloc_ready_tokens=rank,
        max_total_num_tokens=1_000_000 + engine,
        max_running_requests=256,
        token_usage=round((7 * seq + rank) / 1_000_000, 4),
        gen_throughput=round(seq * 1.37, 2),
        cache_hit_rate=round(1 / (seq + 3), 4),
        utilization=0.0 if seq % 5 == 0 else 0.5,
        total_prefill_uncached_tokens=seq * 1000,
        total_prefill_busy_us=seq * 12345,
        decode_moments=[float(seq), seq * 0.25, 1e-05 * seq] if rank % 2 == 0 else None,
        memory=L.MemoryMetrics(weight_gb=15.123, kv_cache_gb=60.5, graph_gb=0.0, token_capacity=1_000_000 + engine),
        speculative=L.SpeculativeMetrics(accept_length=1.5 + rank, accept_rate=0.75) if rank != 3 else None,
        lora=L.LoRAMetrics(slots_used=rank, slots_total=8, utilization=rank / 8) if rank == 1 else None,
        disaggregation=L.DisaggregationMetrics(mode="decode" if rank % 2 else "null", decode_prealloc_queue_reqs=seq % 3, kv_transfer_speed_gb_s=12.5),
        queues=L.QueueMetrics(waiting=seq % 7, grammar=0, paused=1, retracted=0, prealloc_ready=rank),
    )


def cases(dp_size):
    names = ["core", "memory", "spec", "lora", "disagg", "queues"]
    includes = [None, "", "all", "all,bogus", " memory , spec ", "core,", "bogus"]
    for n in range(1, len(names) + 1):
        includes += [",".join(c) for c in itertools.combinations(names, n)]
    ranks = [None, -1, dp_size] + list(range(dp_size))
    for include, dp_rank, fmt in itertools.product(includes, ranks, [None, "prometheus"]):
        yield include, dp_rank, fmt


async def expected(tm, dp_size):
    out = []
    for include, dp_rank, fmt in cases(dp_size):
        case = {"include": include, "dp_rank": dp_rank, "format": fmt}
        try:
            r = await v1.get_loads(dp_rank=dp_rank, include=include, format=fmt, tokenizer_manager=tm)
            if isinstance(r, Response):
                case["prometheus"] = r.content
                case["media_type"] = r.media_type
            else:
                case["json"] = r
        except (HTTPException, ValueError) as e:
            case["error"] = type(e).__name__
        out.append(case)
    return out


def main():
    out_dir, engines, ranks, rate, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    ids = ["engine%d%08x" % (e, os.getpid()) for e in range(engines)]
    paths = {i: os.path.join(out_dir, os.path.basename(ls.shm_path_for(i))) for i in ids}
    writers = {(e, r): ls.ShmLoadSnapshotWriter(paths[ids[e]], ranks, r) for e in range(engines) for r in range(ranks)}
    print(json.dumps({"writing": paths}), flush=True)
    seq, period, start = 0, 1.0 / rate, time.monotonic()
    while time.monotonic() - start < seconds:
        seq += 1
        for (e, r), w in writers.items():
            w.write(snapshot(e, r, seq))
        time.sleep(max(0.0, start + seq * period - time.monotonic()))
    seq += 1
    for (e, r), w in writers.items():
        w.write(snapshot(e, r, seq))
    docs = {}
    for e, i in enumerate(ids):
        reader = ls.ShmLoadSnapshotReader(paths[i], ranks)
        docs[i] = asyncio.run(expected(TokenizerManager(reader, ranks), ranks))
    print(json.dumps({"expected": docs, "snapshots_per_rank": seq}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
