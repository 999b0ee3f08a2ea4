#!/usr/bin/env python3
"""Drive REAL SGLang FPM publishers (``_FpmPublisherThread`` from the released
module, see fpm_real.py) on behalf of the Rust integration tests.

Run with the venv python: ``target/pyenv/bin/python tests/py/publisher_driver.py
[--max-seconds N]``. Line protocol: one JSON object per line on stdin, one JSON
reply per line on stdout (flushed). The first line printed is ``{"ready":true}``
(after the real module is loaded). Errors reply ``{"ok":false,"error":"..."}`` and
never end the driver. Diagnostics go to stderr only.

Publishers are addressed by a key: the optional "key" field, else "rank". Keys are
compared as strings (so 0 and "0" are the same publisher).

Commands (fields in [] are optional):

  {"cmd":"start","rank":R,"endpoint":E,["worker_id":"w"],["idle":true],["key":K],["dp_rank":D],
   ["sockopts":{"HEARTBEAT_IVL":100,"SNDHWM":100,"CURVE_SERVER":1,...}]}
      _FpmPublisherThread(E, worker_id, dp_rank) then set_idle(idle).
      dp_rank defaults to int(rank); worker_id to ""; idle to true. "sockopts" are
      libzmq socket options (names of pyzmq's zmq constants; ints, or strings for
      byte options such as CURVE_SECRETKEY) set on the publisher's PUB socket
      before it binds, as a deployment (or a ZMQ proxy) would set them.
      For ipc:// endpoints a stale socket file is removed and the bind retried;
      a tcp bind that fails with "address in use" is retried for up to 2 s.
      -> {"ok":true}
  {"cmd":"publish","rank":R,"metrics":{...},["count":N],["vary":true],["drain":true]}
      Builds a real ForwardPassMetrics from wire field names (nested
      scheduled_requests / queued_requests dicts become the real nested structs;
      missing fields take the struct defaults; worker_id and dp_rank default to the
      publisher's), then calls publish() N times (default 1). With "vary", copy i
      has scheduled_requests.sum_prefill_tokens increased by i. The publisher
      itself drops silently when its 10,000-deep queue is full (such drops leave
      no sequence gap). With "backpressure", the driver waits while the queue is
      full instead, so nothing is dropped before a sequence number is given. With
      "drain", the reply waits until the publisher's queue is empty. Both waits
      together are bounded by "drain_timeout" s (default 10, at most 120). With
      "rate" (frames/s), the copies are paced at that rate instead of queued at
      once (bounded: count / rate at most 120 s).
      -> {"ok":true,"published":N[,"timed_out":bool][,"drained":bool]}
  {"cmd":"set_idle","rank":R,"idle":bool}            -> {"ok":true}
  {"cmd":"stop","rank":R}          shutdown(); the key is forgotten -> {"ok":true}
  {"cmd":"restart","rank":R}       shutdown(), then start again with the same
                                   endpoint, worker_id, dp_rank and idle flag
                                   (sequence restarts at 0) -> {"ok":true}
  {"cmd":"encode","metrics":{...},["rank":R]}
      The real module's encode() of the metrics (counter_id as given, default 0;
      worker_id/dp_rank from publisher R if given and not in metrics, else the
      struct defaults). -> {"ok":true,"hex":"..."}
  {"cmd":"decode","hex":"..."}     The real module's decode(). -> {"ok":true,"metrics":{...}}
  {"cmd":"status",["rank":R]}      -> {"ok":true,"publishers":{key:{endpoint,worker_id,
                                      dp_rank,idle,next_seq,queued}}}
  {"cmd":"ping"}                   -> {"ok":true}
  {"cmd":"quit"}                   shutdown all, reply {"ok":true}, exit 0.
EOF on stdin does the same. After --max-seconds (default 300) the driver shuts
everything down and exits 0 by itself, with a note on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fpm_real  # noqa: E402

import msgspec  # noqa: E402
import zmq  # noqa: E402

FPM = fpm_real.load()

_out_lock = threading.Lock()


def reply(obj: dict) -> None:
    line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(msg: str) -> None:
    sys.stderr.write(f"publisher_driver: {msg}\n")
    sys.stderr.flush()


class CmdError(Exception):
    pass


FPM_FIELDS = set(FPM.ForwardPassMetrics.__struct_fields__)
SCHED_FIELDS = set(FPM.ScheduledRequestMetrics.__struct_fields__)
QUEUED_FIELDS = set(FPM.QueuedRequestMetrics.__struct_fields__)


def build_metrics(spec, worker_id=None, dp_rank=None):
    """Real ForwardPassMetrics from a dict keyed by wire field names."""
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise CmdError("metrics must be a JSON object")
    unknown = set(spec) - FPM_FIELDS
    if unknown:
        raise CmdError(f"unknown ForwardPassMetrics field(s): {sorted(unknown)}")
    for name, allowed in (("scheduled_requests", SCHED_FIELDS), ("queued_requests", QUEUED_FIELDS)):
        sub = spec.get(name)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise CmdError(f"{name} must be a JSON object")
        bad = set(sub) - allowed
        if bad:
            raise CmdError(f"unknown {name} field(s): {sorted(bad)}")
    spec = dict(spec)
    if worker_id is not None:
        spec.setdefault("worker_id", worker_id)
    if dp_rank is not None:
        spec.setdefault("dp_rank", dp_rank)
    try:
        # convert() builds the real nested Structs and type-checks every value.
        return msgspec.convert(spec, FPM.ForwardPassMetrics)
    except msgspec.ValidationError as e:
        raise CmdError(f"invalid metrics: {e}") from None


def next_seq(pub) -> int | None:
    # itertools.count's repr is "count(N)" with N the next value; reading it
    # does not consume a number.
    m = re.fullmatch(r"count\((\d+)\)", repr(getattr(pub, "_seq", None)))
    return int(m.group(1)) if m else None


class Entry:
    def __init__(self, endpoint: str, worker_id: str, dp_rank: int, idle: bool, sockopts=None):
        self.endpoint = endpoint
        self.worker_id = worker_id
        self.dp_rank = dp_rank
        self.idle = idle
        self.sockopts = sockopts or {}
        self.pub = None

    def open(self) -> None:
        self.pub = make_publisher(self.endpoint, self.worker_id, self.dp_rank, self.sockopts)
        self.pub.set_idle(self.idle)

    def close(self) -> None:
        pub, self.pub = self.pub, None
        if pub is not None:
            pub.shutdown()


def sockopt_pairs(sockopts: dict):
    pairs = []
    for name, value in sockopts.items():
        opt = getattr(zmq, str(name), None)
        if not isinstance(opt, int):
            raise CmdError(f"unknown socket option {name!r}")
        if isinstance(value, str):
            value = value.encode()
        elif not isinstance(value, int) or isinstance(value, bool):
            raise CmdError(f"socket option {name} needs an int or a string")
        pairs.append((opt, value))
    return pairs


class _OptionsContext(zmq.Context):
    """A zmq.Context whose sockets get the given options at creation, before the
    real publisher binds (options set after bind do not reach its connections)."""

    pending: list = []

    def socket(self, socket_type, **kwargs):
        s = super().socket(socket_type, **kwargs)
        for opt, value in _OptionsContext.pending:
            s.setsockopt(opt, value)
        return s


def new_publisher(endpoint: str, worker_id: str, dp_rank: int, sockopts: dict):
    if not sockopts:
        return FPM._FpmPublisherThread(endpoint, worker_id, dp_rank)
    # The real module calls zmq.Context() in its constructor: hand it ours for that call.
    _OptionsContext.pending = sockopt_pairs(sockopts)
    plain = zmq.Context
    zmq.Context = _OptionsContext
    try:
        return FPM._FpmPublisherThread(endpoint, worker_id, dp_rank)
    finally:
        zmq.Context = plain
        _OptionsContext.pending = []


def make_publisher(endpoint: str, worker_id: str, dp_rank: int, sockopts=None):
    deadline = time.monotonic() + 2.0
    removed_stale = False
    while True:
        try:
            return new_publisher(endpoint, worker_id, dp_rank, sockopts or {})
        except zmq.ZMQError as e:
            if endpoint.startswith("ipc://") and not removed_stale:
                path = endpoint[len("ipc://"):]
                removed_stale = True
                if path and not path.startswith("@") and os.path.exists(path):
                    log(f"bind {endpoint} failed ({e}); removing stale socket file and retrying")
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                    continue
            if e.errno == zmq.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise CmdError(f"bind {endpoint} failed: {e}") from None


class Driver:
    def __init__(self):
        self.entries: dict[str, Entry] = {}
        self.lock = threading.Lock()  # commands vs. the max-seconds watchdog

    @staticmethod
    def key_of(cmd: dict, required: bool = True):
        if "key" in cmd and cmd["key"] is not None:
            return str(cmd["key"])
        if "rank" in cmd and cmd["rank"] is not None:
            return str(cmd["rank"])
        if required:
            raise CmdError("missing 'rank' (or 'key')")
        return None

    def entry(self, cmd: dict) -> Entry:
        key = self.key_of(cmd)
        e = self.entries.get(key)
        if e is None or e.pub is None:
            raise CmdError(f"no running publisher with key {key!r}")
        return e

    # -- commands -----------------------------------------------------------
    def cmd_ping(self, cmd):
        return {"ok": True}

    def cmd_start(self, cmd):
        key = self.key_of(cmd)
        if key in self.entries:
            raise CmdError(f"publisher {key!r} already started (stop or restart it)")
        endpoint = cmd.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise CmdError("start needs an 'endpoint' string")
        worker_id = cmd.get("worker_id", "")
        if not isinstance(worker_id, str):
            raise CmdError("worker_id must be a string")
        dp_rank = cmd.get("dp_rank", cmd.get("rank"))
        try:
            dp_rank = int(dp_rank)
        except (TypeError, ValueError):
            raise CmdError("dp_rank (or rank) must be an integer") from None
        idle = cmd.get("idle", True)
        if not isinstance(idle, bool):
            raise CmdError("idle must be a boolean")
        sockopts = cmd.get("sockopts", {})
        if not isinstance(sockopts, dict):
            raise CmdError("sockopts must be an object")
        sockopt_pairs(sockopts)
        e = Entry(endpoint, worker_id, dp_rank, idle, sockopts)
        e.open()
        self.entries[key] = e
        return {"ok": True}

    def cmd_publish(self, cmd):
        e = self.entry(cmd)
        metrics = build_metrics(cmd.get("metrics"), e.worker_id, e.dp_rank)
        count = cmd.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise CmdError("count must be a non-negative integer")
        vary = bool(cmd.get("vary", False))
        backpressure = bool(cmd.get("backpressure", False))
        timeout = float(cmd.get("drain_timeout", 10.0))
        deadline = time.monotonic() + max(0.0, min(timeout, 120.0))
        pub = e.pub
        q = pub._queue
        sched = metrics.scheduled_requests
        base = sched.sum_prefill_tokens
        replace = msgspec.structs.replace
        timed_out = False
        rate = cmd.get("rate")
        if rate is not None:
            if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
                raise CmdError("rate must be a positive number of frames/s")
            if count / rate > 120:
                raise CmdError("a paced publish may last 120 s at most")
        start = time.monotonic()
        for i in range(count):
            if rate is not None:
                wait = start + i / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            m = replace(metrics, scheduled_requests=replace(sched, sum_prefill_tokens=base + i)) if vary else metrics
            if backpressure and q.full():
                # Wait for room instead of letting the real publisher drop.
                while q.full() and time.monotonic() < deadline:
                    time.sleep(0.0005)
                timed_out = timed_out or q.full()
            pub.publish(m)
        out = {"ok": True, "published": count}
        if backpressure:
            out["timed_out"] = timed_out
        if cmd.get("drain"):
            while not q.empty() and time.monotonic() < deadline:
                time.sleep(0.002)
            out["drained"] = q.empty()
        return out

    def cmd_set_idle(self, cmd):
        e = self.entry(cmd)
        idle = cmd.get("idle")
        if not isinstance(idle, bool):
            raise CmdError("set_idle needs 'idle': true|false")
        e.idle = idle
        e.pub.set_idle(idle)
        return {"ok": True}

    def cmd_stop(self, cmd):
        key = self.key_of(cmd)
        e = self.entries.pop(key, None)
        if e is None:
            raise CmdError(f"no publisher with key {key!r}")
        e.close()
        return {"ok": True}

    def cmd_restart(self, cmd):
        key = self.key_of(cmd)
        e = self.entries.get(key)
        if e is None:
            raise CmdError(f"no publisher with key {key!r}")
        e.close()
        try:
            e.open()
        except Exception:
            self.entries.pop(key, None)
            raise
        return {"ok": True}

    def cmd_encode(self, cmd):
        wid = dpr = None
        key = self.key_of(cmd, required=False)
        if key is not None and key in self.entries:
            wid, dpr = self.entries[key].worker_id, self.entries[key].dp_rank
        metrics = build_metrics(cmd.get("metrics"), wid, dpr)
        return {"ok": True, "hex": FPM.encode(metrics).hex()}

    def cmd_decode(self, cmd):
        h = cmd.get("hex")
        if not isinstance(h, str):
            raise CmdError("decode needs a 'hex' string")
        try:
            data = bytes.fromhex(h)
        except ValueError:
            raise CmdError("bad hex") from None
        try:
            m = FPM.decode(data)
        except msgspec.MsgspecError as ex:
            raise CmdError(f"real decode() failed: {ex}") from None
        return {"ok": True, "metrics": msgspec.to_builtins(m)}

    def cmd_status(self, cmd):
        key = self.key_of(cmd, required=False)
        keys = [key] if key is not None else list(self.entries)
        pubs = {}
        for k in keys:
            e = self.entries.get(k)
            if e is None:
                raise CmdError(f"no publisher with key {k!r}")
            pubs[k] = {
                "endpoint": e.endpoint,
                "worker_id": e.worker_id,
                "dp_rank": e.dp_rank,
                "idle": e.idle,
                "next_seq": next_seq(e.pub) if e.pub else None,
                "queued": e.pub._queue.qsize() if e.pub else None,
            }
        return {"ok": True, "publishers": pubs}

    def shutdown_all(self) -> None:
        entries = list(self.entries.values())
        self.entries.clear()
        threads = [threading.Thread(target=e.close, daemon=True) for e in entries]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5.0
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def handle(self, line: str):
        try:
            cmd = json.loads(line)
        except ValueError as ex:
            return {"ok": False, "error": f"bad JSON: {ex}"}
        if not isinstance(cmd, dict):
            return {"ok": False, "error": "command must be a JSON object"}
        name = cmd.get("cmd")
        fn = getattr(self, f"cmd_{name}", None) if isinstance(name, str) else None
        if fn is None:
            return {"ok": False, "error": f"unknown cmd {name!r}"}
        try:
            with self.lock:
                return fn(cmd)
        except CmdError as ex:
            return {"ok": False, "error": str(ex)}
        except Exception as ex:  # never crash the driver
            log("".join(traceback.format_exception(ex)).rstrip())
            return {"ok": False, "error": f"{type(ex).__name__}: {ex}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="exit by itself after this many seconds (default 300)")
    args = ap.parse_args()

    driver = Driver()

    def watchdog():
        log(f"--max-seconds {args.max_seconds:g} reached; shutting down")
        # Do not wait forever for a command in progress.
        got = driver.lock.acquire(timeout=5.0)
        try:
            driver.shutdown_all()
        finally:
            if got:
                driver.lock.release()
        try:
            sys.stdout.flush()
        except Exception:
            pass
        os._exit(0)

    timer = threading.Timer(args.max_seconds, watchdog)
    timer.daemon = True
    timer.start()

    try:
        return serve(driver, timer)
    except (BrokenPipeError, KeyboardInterrupt):
        # The test process went away: stop the publishers and leave quietly.
        timer.cancel()
        driver.shutdown_all()
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


def serve(driver: Driver, timer: threading.Timer) -> int:
    reply({"ready": True})
    while True:
        line = sys.stdin.readline()
        if not line:  # EOF
            break
        line = line.strip()
        if not line:
            continue
        try:
            is_quit = json.loads(line).get("cmd") == "quit"
        except Exception:
            is_quit = False
        if is_quit:
            with driver.lock:
                driver.shutdown_all()
            reply({"ok": True})
            break
        reply(driver.handle(line))
    timer.cancel()
    with driver.lock:
        driver.shutdown_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
