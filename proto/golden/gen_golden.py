#!/usr/bin/env python3
"""Generate the golden FPM payloads in proto/golden/.

Run with the test venv (scripts/test-deps.sh makes it):

    target/pyenv/bin/python proto/golden/gen_golden.py

For each case it writes
  <name>.msgpack  the raw payload bytes (frame 3 of the 3-frame message)
  <name>.json     the payload decoded field by field (wire names, wire order,
                  nesting) plus "sequence": the number in frame 2
and a MANIFEST.md table. Deterministic: fixed values, so every run writes the
same bytes (files are only rewritten when their content changes).

v1_* cases are CAPTURED from the real SGLang publisher (sglang==0.5.23,
_FpmPublisherThread) over ipc in a temp dir with a pyzmq SUB socket. The script
asserts that each captured payload equals the real module's encode() of the
expected metrics with counter_id stamped, that counter_id equals the sequence
frame, and that the real decode() gives the metrics back.

The other cases are forms the released publisher does not send but a robust
decoder must accept; they are built with msgspec Structs (real msgpack).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "py"))

try:
    import msgspec
    import zmq
    import fpm_real
except ImportError as e:  # pragma: no cover
    sys.exit(f"gen_golden: {e}; run scripts/test-deps.sh and use target/pyenv/bin/python")

FPM = fpm_real.load()
FPMetrics = FPM.ForwardPassMetrics
Sched = FPM.ScheduledRequestMetrics
Queued = FPM.QueuedRequestMetrics
replace = msgspec.structs.replace

RECV_TIMEOUT_MS = 5000
CAPTURE_ATTEMPTS = 5


def welford(values):
    """(count, total, population variance) with the real module's accumulator."""
    acc = FPM.WelfordAccumulator()
    for v in values:
        acc.add(v)
    return acc.count, acc.total, acc.variance()


# --------------------------------------------------------------------------
# Fixed inputs. Every number is derived from fixed request lists the way the
# SGLang scheduler does it (Welford population variance).
# --------------------------------------------------------------------------
MAIN_WORKER = "694d98a3c5e3b1f2"  # a Dynamo-style instance id
MAIN_RANK = 0
# quotes, backslash, newline, 2/3/4-byte UTF-8; 36 bytes, so msgpack str8 (d9 24)
UNICODE_WORKER = 'dyn "w\\1"\nnœud-東京-🚀/decode-0'
UNICODE_RANK = 2
EMPTY_WORKER = ""  # SGLang launched alone, without Dynamo
EMPTY_RANK = 0


def case_prefill():
    # 3 new prompts, no prefix-cache hits, each fully computed this step.
    n, total, var = welford([512, 1024, 2048])
    qn, qtotal, qvar = welford([300, 700])
    return FPMetrics(
        worker_id=MAIN_WORKER, dp_rank=MAIN_RANK, wall_time=0.0421875,
        scheduled_requests=Sched(num_prefill_requests=n, sum_prefill_tokens=total,
                                 var_prefill_length=var),
        queued_requests=Queued(num_prefill_requests=qn, sum_prefill_tokens=qtotal,
                               var_prefill_length=qvar),
    )


def case_decode():
    ctx = [1000 + 37 * i for i in range(64)]
    n, total, var = welford(ctx)
    return FPMetrics(
        worker_id=MAIN_WORKER, dp_rank=MAIN_RANK, wall_time=0.0185,
        scheduled_requests=Sched(num_decode_requests=n, sum_decode_kv_tokens=total,
                                 var_decode_kv_tokens=var),
        # one preempted request waiting to resume
        queued_requests=Queued(num_decode_requests=1, sum_decode_kv_tokens=4096,
                               var_decode_kv_tokens=0.0),
    )


def case_mixed():
    # Chunked prefill: request A (8192-token prompt) computes its 3rd chunk of
    # 2048 with 4096 already in KV from earlier chunks; request B (1536 tokens)
    # has a 1024-token prefix-cache hit and computes 512. Plus 30 decodes and a
    # queue of 5 prompts and 2 preempted decodes.
    prompt_lens = [8192, 1536]
    computed = [2048, 512]
    kv_read = [4096, 1024]
    pn, _, pvar = welford(prompt_lens)
    dn, dtotal, dvar = welford([300 + 211 * i for i in range(30)])
    qn, qtotal, qvar = welford([128, 256, 4000, 900, 77])
    qdn, qdtotal, qdvar = welford([2500, 3100])
    return FPMetrics(
        worker_id=MAIN_WORKER, dp_rank=MAIN_RANK, wall_time=0.0734,
        scheduled_requests=Sched(
            num_prefill_requests=pn, sum_prefill_tokens=sum(computed),
            var_prefill_length=pvar, sum_prefill_kv_tokens=sum(kv_read),
            num_decode_requests=dn, sum_decode_kv_tokens=dtotal,
            var_decode_kv_tokens=dvar),
        queued_requests=Queued(
            num_prefill_requests=qn, sum_prefill_tokens=qtotal, var_prefill_length=qvar,
            num_decode_requests=qdn, sum_decode_kv_tokens=qdtotal,
            var_decode_kv_tokens=qdvar),
    )


def case_large():
    # One value per msgpack unsigned int width: fixint, uint8, uint16, uint32, uint64.
    return FPMetrics(
        worker_id=MAIN_WORKER, dp_rank=MAIN_RANK, wall_time=12.5,
        scheduled_requests=Sched(
            num_prefill_requests=200,               # uint8
            sum_prefill_tokens=1_000_000,           # uint32
            var_prefill_length=2.5e9,
            sum_prefill_kv_tokens=4_000_000_000,    # uint32 (just below 2^32)
            num_decode_requests=4096,               # uint16
            sum_decode_kv_tokens=5_000_000_000,     # uint64
            var_decode_kv_tokens=1e12),
        queued_requests=Queued(
            num_prefill_requests=70_000,            # uint32
            sum_prefill_tokens=9_007_199_254_740_993,  # uint64, 2^53 + 1 (not exact in f64)
            var_prefill_length=1e12,
            num_decode_requests=127,                # largest positive fixint
            sum_decode_kv_tokens=4_294_967_296,     # uint64, 2^32
            var_decode_kv_tokens=0.1),
    )


def case_unicode():
    n, total, var = welford([700, 900])
    return FPMetrics(
        worker_id=UNICODE_WORKER, dp_rank=UNICODE_RANK, wall_time=0.011,
        scheduled_requests=Sched(num_decode_requests=n, sum_decode_kv_tokens=total,
                                 var_decode_kv_tokens=var),
    )


def case_empty_worker():
    return FPMetrics(
        worker_id=EMPTY_WORKER, dp_rank=EMPTY_RANK, wall_time=0.0095,
        scheduled_requests=Sched(num_prefill_requests=1, sum_prefill_tokens=42,
                                 var_prefill_length=0.0),
    )


# --------------------------------------------------------------------------
# Capture from the real publisher
# --------------------------------------------------------------------------
def capture(zctx, tmpdir, tag, worker_id, dp_rank, metrics_list):
    """Run a real _FpmPublisherThread on ipc, wait for its first heartbeat
    (sequence 0; slow-joiner rule), then publish metrics_list (sequences 1..n).
    Returns [(seq, payload)] with the heartbeat first."""
    last_err = None
    for attempt in range(CAPTURE_ATTEMPTS):
        endpoint = f"ipc://{tmpdir}/fpm-{tag}-{attempt}.{dp_rank}"
        pub = FPM._FpmPublisherThread(endpoint, worker_id, dp_rank)
        sub = zctx.socket(zmq.SUB)
        try:
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
            sub.setsockopt(zmq.LINGER, 0)
            sub.connect(endpoint)
            pub.set_idle(True)
            frames = [sub.recv_multipart()]  # the first idle heartbeat
            pub.set_idle(False)              # no more heartbeats from here
            for m in metrics_list:
                pub.publish(m)
            for _ in metrics_list:
                frames.append(sub.recv_multipart())
            out = []
            for fr in frames:
                assert len(fr) == 3, f"expected 3 frames, got {len(fr)}"
                topic, seq_b, payload = fr
                assert topic == b"", topic
                assert len(seq_b) == 8, seq_b
                out.append((int.from_bytes(seq_b, "big"), bytes(payload)))
            seqs = [s for s, _ in out]
            if seqs != list(range(len(out))):
                raise RuntimeError(f"unexpected sequence numbers {seqs}")
            return out
        except (zmq.Again, RuntimeError) as e:
            last_err = e
            print(f"gen_golden: capture {tag} attempt {attempt} failed: {e!r}; retrying",
                  file=sys.stderr)
        finally:
            sub.close(linger=0)
            pub.shutdown()
    raise SystemExit(f"gen_golden: could not capture {tag}: {last_err!r}")


def check_real(name, seq, payload, expected):
    stamped = replace(expected, counter_id=seq)
    enc = FPM.encode(stamped)
    assert payload == enc, f"{name}: captured payload != encode(metrics)\n{payload.hex()}\n{enc.hex()}"
    dec = FPM.decode(payload)
    assert dec == stamped, f"{name}: decode mismatch {dec!r}"
    assert dec.counter_id == seq


# --------------------------------------------------------------------------
# Variants built with msgspec (not sent by the released publisher)
# --------------------------------------------------------------------------
class PosSched(msgspec.Struct, array_like=True):
    num_prefill_requests: int
    sum_prefill_tokens: int
    var_prefill_length: float
    sum_prefill_kv_tokens: int
    num_decode_requests: int
    sum_decode_kv_tokens: int
    var_decode_kv_tokens: float


class PosQueued(msgspec.Struct, array_like=True):
    num_prefill_requests: int
    sum_prefill_tokens: int
    var_prefill_length: float
    num_decode_requests: int
    sum_decode_kv_tokens: int
    var_decode_kv_tokens: float


class PosFPM(msgspec.Struct, array_like=True):
    version: int
    worker_id: str
    dp_rank: int
    counter_id: int
    wall_time: float
    scheduled_requests: PosSched
    queued_requests: PosQueued


class LegacyFPM(msgspec.Struct):
    # early-2026 payloads: no version, no counter_id
    worker_id: str
    dp_rank: int
    wall_time: float
    scheduled_requests: Sched
    queued_requests: Queued


class TimingScopeFPM(msgspec.Struct):
    # vLLM native (unreleased): timing_scope after counter_id
    version: int
    worker_id: str
    dp_rank: int
    counter_id: int
    timing_scope: str
    wall_time: float
    scheduled_requests: Sched
    queued_requests: Queued


class ExtraFieldFPM(msgspec.Struct):
    version: int
    worker_id: str
    dp_rank: int
    counter_id: int
    wall_time: float
    scheduled_requests: Sched
    queued_requests: Queued
    future_field: list


class MissingQueuedFPM(msgspec.Struct):
    version: int
    worker_id: str
    dp_rank: int
    counter_id: int
    wall_time: float
    scheduled_requests: Sched


_enc = msgspec.msgpack.Encoder()


def struct_fields(s):
    return {f: getattr(s, f) for f in s.__struct_fields__}


def variants(mixed_stamped):
    """(name, payload, sequence, what, how) for the non-released forms, all
    carrying the v1_mixed values."""
    m = mixed_stamped
    sr, qr = m.scheduled_requests, m.queued_requests
    base = dict(worker_id=m.worker_id, dp_rank=m.dp_rank, wall_time=m.wall_time,
                scheduled_requests=sr, queued_requests=qr)
    out = []
    pos = PosFPM(version=m.version, worker_id=m.worker_id, dp_rank=m.dp_rank,
                 counter_id=m.counter_id, wall_time=m.wall_time,
                 scheduled_requests=PosSched(**struct_fields(sr)),
                 queued_requests=PosQueued(**struct_fields(qr)))
    out.append(("positional_v1", _enc.encode(pos), m.counter_id,
                "v1_mixed's values as a msgpack ARRAY in ForwardPassMetrics field order, nested structs also arrays (the 'positional' form some comments claim)",
                "msgspec Structs with array_like=True (outer and both nested), same field order as the real module"))
    out.append(("legacy_no_version", _enc.encode(LegacyFPM(**base)), 0,
                "early-2026 map without `version` and `counter_id` (fields worker_id, dp_rank, wall_time, scheduled_requests, queued_requests); v1_mixed values",
                "msgspec Struct (map form) with those 5 fields; nested are the real module's structs; sequence 0 suggested"))
    out.append(("vllm_timing_scope", _enc.encode(TimingScopeFPM(
        version=1, counter_id=70_000, timing_scope="execute_model_cuda", **base)), 70_000,
                "vLLM-native v1 map with `timing_scope: \"execute_model_cuda\"` right after counter_id; counter_id 70000 (uint32 form); v1_mixed values",
                "msgspec Struct (map form) with timing_scope inserted after counter_id; nested real structs"))
    out.append(("v2_unknown_version", _enc.encode(TimingScopeFPM(
        version=2, counter_id=70_001, timing_scope="execute_model_cuda", **base)), 70_001,
                "as vllm_timing_scope but `version: 2`, counter_id 70001: an unknown version a decoder must not crash on (Dynamo drops it with a warning)",
                "same Struct as vllm_timing_scope with version=2"))
    out.append(("extra_unknown_field", _enc.encode(ExtraFieldFPM(
        version=1, counter_id=m.counter_id, future_field=[1, 2, 3], **base)), m.counter_id,
                "v1_mixed map plus a trailing unknown field `future_field: [1,2,3]` (fixarray of fixints)",
                "msgspec Struct (map form) = v1 fields + future_field; nested real structs"))
    mq = dict(base)
    del mq["queued_requests"]
    out.append(("missing_queued", _enc.encode(MissingQueuedFPM(
        version=1, counter_id=m.counter_id, **mq)), m.counter_id,
                "v1_mixed map without `queued_requests` (a decoder should default it to zeros)",
                "msgspec Struct (map form) = v1 fields minus queued_requests; nested real struct"))
    return out


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------
def wire_view(payload: bytes, positional_names: bool = False):
    """Generic decode of the payload (no schema), keeping the wire order.
    For the positional form, names are put back from the v1 field order."""
    obj = msgspec.msgpack.decode(payload)
    if positional_names:
        assert isinstance(obj, list)
        obj = dict(zip(FPMetrics.__struct_fields__, obj))
        obj["scheduled_requests"] = dict(zip(Sched.__struct_fields__, obj["scheduled_requests"]))
        obj["queued_requests"] = dict(zip(Queued.__struct_fields__, obj["queued_requests"]))
    return obj


def real_decode_result(payload: bytes) -> str:
    try:
        d = FPM.decode(payload)
    except msgspec.MsgspecError as e:
        return f"error: {e}"
    notes = []
    wire = msgspec.msgpack.decode(payload)
    if isinstance(wire, dict):
        missing = [f for f in FPMetrics.__struct_fields__ if f not in wire]
        extra = [f for f in wire if f not in FPMetrics.__struct_fields__]
        if missing:
            def shown(v):
                v = msgspec.to_builtins(v)
                return "all-zero defaults" if isinstance(v, dict) else repr(v)
            notes.append("missing " + ", ".join(f"{f} -> {shown(getattr(d, f))}" for f in missing))
        if extra:
            notes.append("ignores " + ", ".join(extra))
    if d.version != 1:
        notes.append(f"accepts version={d.version}")
    return "ok" + (f" ({'; '.join(notes)})" if notes else "")


changed = []


def write(path, data: bytes):
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    changed.append(os.path.relpath(path, REPO))


def main():
    cases_main = [("v1_prefill", case_prefill(),
                   "prefill-only step: 3 new prompts (512/1024/2048 tokens, no cache hits), 2 prompts queued"),
                  ("v1_decode", case_decode(),
                   "decode-only step: 64 decoding requests, 1 preempted request queued"),
                  ("v1_mixed", case_mixed(),
                   "chunked prefill with KV already present (earlier chunk 4096 + prefix-cache hit 1024) + 30 decodes + queued prompts and preempted decodes"),
                  ("v1_large", case_large(),
                   "ints in every unsigned width (fixint/uint8/uint16/uint32/uint64 incl. 5e9, 2^32, 2^53+1), variances 1e12 and 2.5e9, wall_time 12.5")]
    rows = []  # (name, payload, json_obj, what, how, seq)

    zctx = zmq.Context()
    tmpdir = tempfile.mkdtemp(prefix="fpm-golden-")
    try:
        got = capture(zctx, tmpdir, "main", MAIN_WORKER, MAIN_RANK, [m for _, m, _ in cases_main])
        hb_expected = FPMetrics(worker_id=MAIN_WORKER, dp_rank=MAIN_RANK)
        how_cap = ("captured: real _FpmPublisherThread(ipc, {w!r}, {r}) -> pyzmq SUB, frame 3 stored; "
                   "== encode() with counter_id stamped")
        seq, payload = got[0]
        check_real("v1_heartbeat", seq, payload, hb_expected)
        rows.append(("v1_heartbeat", payload, seq,
                     "idle heartbeat exactly as the publisher builds it: ForwardPassMetrics(worker_id, dp_rank), all else default, counter_id stamped (first frame, sequence 0)",
                     how_cap.format(w=MAIN_WORKER, r=MAIN_RANK) + "; set_idle(True), no publish"))
        for (name, m, what), (seq, payload) in zip(cases_main, got[1:]):
            check_real(name, seq, payload, m)
            rows.append((name, payload, seq, what,
                         how_cap.format(w=MAIN_WORKER, r=MAIN_RANK) + "; publish() after the first heartbeat"))
        mixed_stamped = replace(case_mixed(), counter_id=got[3][0])

        for name, worker, rank, m, what in [
            ("v1_worker_id_unicode", UNICODE_WORKER, UNICODE_RANK, case_unicode(),
             "worker_id with double quotes, backslash, newline and 2/3/4-byte UTF-8, 36 bytes so str8 form (d9 24), dp_rank 2; 2 decodes"),
            ("v1_empty_worker", EMPTY_WORKER, EMPTY_RANK, case_empty_worker(),
             "worker_id \"\" (SGLang launched alone: empty fixstr a0); 1 small prefill"),
        ]:
            got2 = capture(zctx, tmpdir, name, worker, rank, [m])
            check_real(name + " heartbeat", got2[0][0], got2[0][1],
                       FPMetrics(worker_id=worker, dp_rank=rank))
            seq, payload = got2[1]
            check_real(name, seq, payload, m)
            rows.append((name, payload, seq, what,
                         how_cap.format(w=worker, r=rank) + " (its own publisher); publish() after the first heartbeat"))
    finally:
        zctx.term()
        shutil.rmtree(tmpdir, ignore_errors=True)

    for name, payload, seq, what, how in variants(mixed_stamped):
        rows.append((name, payload, seq, what, how))

    # Sanity checks on the variants' bytes.
    by_name = {r[0]: r for r in rows}
    assert by_name["positional_v1"][1][0] == 0x97  # fixarray of 7
    assert wire_view(by_name["positional_v1"][1], True) == wire_view(by_name["v1_mixed"][1])
    assert list(wire_view(by_name["vllm_timing_scope"][1]))[4] == "timing_scope"

    manifest_rows = []
    for name, payload, seq, what, how in rows:
        obj = wire_view(payload, positional_names=(name == "positional_v1"))
        obj["sequence"] = seq
        write(os.path.join(HERE, name + ".msgpack"), payload)
        write(os.path.join(HERE, name + ".json"),
              (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
        manifest_rows.append((name, len(payload), hashlib.sha256(payload).hexdigest()[:16],
                              seq, what, how, real_decode_result(payload)))

    write(os.path.join(HERE, "MANIFEST.md"), render_manifest(manifest_rows).encode("utf-8"))
    for p in changed:
        print(f"gen_golden: wrote {p}", file=sys.stderr)
    print(f"gen_golden: {len(rows)} cases, {len(changed)} file(s) changed", file=sys.stderr)


def md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_manifest(rows) -> str:
    lines = [
        "# Golden FPM payloads",
        "",
        "Generated by `target/pyenv/bin/python proto/golden/gen_golden.py` (run",
        "`scripts/test-deps.sh` first). Do not edit by hand; the script is deterministic and",
        "rewrites only files whose content changed.",
        "",
        "- `<name>.msgpack`: the raw payload, i.e. frame 3 of the 3-frame message `[b\"\", seq(8 bytes BE), payload]`.",
        "- `<name>.json`: the payload decoded without a schema, keys in wire order with wire field",
        "  names and nesting (for `positional_v1` the names are put back from the v1 field order),",
        "  plus `\"sequence\"`: the number carried in frame 2 (for captured cases, the real one; for the",
        "  built variants, a suggested value equal to their counter_id, 0 for the legacy form).",
        "  Floats are JSON numbers that round-trip to the same f64.",
        "- `v1_*` cases were captured from the real SGLang publisher module (sglang==0.5.23,",
        "  `sglang/srt/observability/forward_pass_metrics.py`, `_FpmPublisherThread`) over ipc: a",
        "  publisher per worker_id, `set_idle(True)`, wait for its first heartbeat (sequence 0), then",
        "  `set_idle(False)` and `publish()`. The script asserts captured == `encode()` of the",
        "  expected metrics with counter_id stamped, counter_id == sequence, and `decode()` round-trips.",
        "- The other cases are NOT sent by the released publisher; they are built with msgspec",
        "  Structs (real msgpack) from the `v1_mixed` values and are forms a robust decoder must accept.",
        "- `real decode()` is what the released module's own decoder does with the bytes.",
        "",
        "| name | bytes | sha256 (first 16) | sequence | what it shows | how it was produced | real `decode()` |",
        "|---|---:|---|---:|---|---|---|",
    ]
    for name, size, sha, seq, what, how, dec in rows:
        lines.append(f"| `{name}` | {size} | `{sha}` | {seq} | {md(what)} | {md(how)} | {md(dec)} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print(f"gen_golden: done in {time.monotonic() - t0:.1f}s", file=sys.stderr)
