"""Real prometheus_client (0.26.0) multiprocess writers and the reference collector,
for tests/multiproc.rs and fpm-bench's multiproc section.

  multiproc.py write --dir D --role stay|exit|writer --families mixed|sglang --seed N
      one process writing metrics in multiprocess mode; prints "ready <pid>" once its
      deterministic writes are done. stay: then waits for stdin to close; exit: exits;
      writer: keeps writing (new label sets too, so its files grow) until stdin closes.
  multiproc.py compare --dir D --url URL --strip engine,model --dead PID --writer PID
      reference output before and after one GET of URL; checks it sample for sample.
  multiproc.py sglang-defs        the metric definitions taken from SGLang's source
  multiproc.py bench-write --dir D --procs 64   64 real writer processes, alive until stdin closes
  multiproc.py bench-python --dir D --runs N    median ms of MultiProcessCollector

SGLang's definitions come from target/fpm-publisher/metrics_collector.py (sglang
0.5.23, extracted by scripts/test-deps.sh), parsed with `ast`: that module needs torch,
so it is never imported; every Counter/Gauge/Histogram/Summary(...) call's name,
documentation, labelnames, multiprocess_mode and buckets are evaluated from the
source, with SGLang's server arguments left unset (its defaults apply).
"""

import argparse
import ast
import json
import math
import os
import select
import shutil
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTOR_SRC = os.path.join(ROOT, "target", "fpm-publisher", "metrics_collector.py")
HOSTILE = ['say "hi"', "back\\slash", "new\nline", "ünïcødé ✓ 🚀", "}{,=", ""]
SGLANG_LABELS = ["model_name", "engine_type", "tp_rank", "pp_rank", "moe_ep_rank"]
KINDS = {"Counter", "Gauge", "Histogram", "Summary"}


class _Unset:
    """Stands for SGLang's server arguments and environment: every option unset."""

    def __getattr__(self, _):
        return self

    def __call__(self, *a, **k):
        return self

    def __bool__(self):
        return False


def sglang_defs(path=COLLECTOR_SRC):
    tree = ast.parse(open(path, encoding="utf-8").read())
    labels = {k: "" for k in SGLANG_LABELS}
    unset = _Unset()

    def exponential_buckets(start, width, length):
        return [start * width**i for i in range(length)]

    def generate_buckets(rule, default):
        return default  # the rule is a server argument, unset here

    base = {"labels": labels, "exponential_buckets": exponential_buckets,
            "generate_buckets": generate_buckets, "sorted": sorted, "set": set,
            "list": list, "range": range}
    defs, seen, skipped = [], set(), []
    ns = {}

    def ev(node):
        class Names(dict):
            def __missing__(self, key):
                return unset
        return eval(compile(ast.Expression(node), "<sglang>", "eval"), {"__builtins__": {}}, Names(ns))

    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        ns = dict(base)  # each function's own local names
        stmts = [n for n in ast.walk(node) if isinstance(n, ast.stmt)]
        for stmt in sorted(stmts, key=lambda n: (n.lineno, n.col_offset)):
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                call = stmt.value
                if stmt.targets[0].id not in base and not (
                        isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in KINDS):
                    try:
                        ns[stmt.targets[0].id] = ev(stmt.value)
                    except Exception:
                        pass
            if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)):
                continue
            call = stmt.value
            if not (isinstance(call.func, ast.Name) and call.func.id in KINDS):
                continue
            kw = {k.arg: k.value for k in call.keywords}
            try:
                d = {"kind": call.func.id.lower(), "name": ev(kw["name"]),
                     "documentation": ev(kw["documentation"]),
                     "labelnames": sorted(ev(kw["labelnames"])) if "labelnames" in kw else []}
                if "multiprocess_mode" in kw:
                    d["multiprocess_mode"] = ev(kw["multiprocess_mode"])
                if "buckets" in kw:
                    d["buckets"] = [float(b) for b in ev(kw["buckets"])]
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                skipped.append("%s: %r" % (ast.unparse(kw.get("name", call)), e))
                continue
            if d["name"] in seen:
                continue
            seen.add(d["name"])
            defs.append(d)
    return defs, skipped


def make_sglang(prom, registry):
    defs, _ = sglang_defs()
    out = []
    for d in defs:
        cls = getattr(prom, d["kind"].capitalize())
        kw = {"name": d["name"], "documentation": d["documentation"],
              "labelnames": d["labelnames"], "registry": registry}
        if "multiprocess_mode" in d:
            kw["multiprocess_mode"] = d["multiprocess_mode"]
        if "buckets" in d:
            kw["buckets"] = d["buckets"]
        out.append((d, cls(**kw)))
    return out


def write_sglang(metrics, seed, label_values):
    for i, (d, m) in enumerate(metrics):
        lv = {k: label_values.get(k, "%s-%d" % (k, (seed + i) % 3)) for k in d["labelnames"]}
        child = m.labels(**lv) if d["labelnames"] else m
        x = (seed * 7 + i) % 11
        if d["kind"] == "counter":
            child.inc(x * 1.5)
        elif d["kind"] == "gauge":
            child.set(x * 0.25 + seed)
        elif d["kind"] == "histogram":
            bs = d.get("buckets") or [0.1, 1.0]
            for j, b in enumerate(bs[: 12]):
                child.observe(b * (0.5 + 0.1 * ((seed + j) % 3)))
        else:
            child.observe(x + 0.5)


def write_mixed(prom, registry, seed):
    c = prom.Counter("mp_requests", "Requests \"served\" by route\\path\nsecond line",
                     ["method", "model"], registry=registry)
    plain = prom.Counter("mp_plain_total", "A label-less counter.", registry=registry)
    s = prom.Summary("mp_payload_bytes", "Payload sizes.", ["route"], registry=registry)
    h = prom.Histogram("mp_latency_seconds", "Latency with custom buckets.", ["model"],
                       buckets=[0.001, 0.01, 0.1, 1, 2.5, 1234567], registry=registry)
    neg = prom.Histogram("mp_delta", "A histogram with negative buckets.",
                         buckets=[-1, 0, 1], registry=registry)
    for i, v in enumerate(HOSTILE):
        c.labels(method="GET" if i % 2 else "POST", model=v).inc(seed + i * 0.5)
        s.labels(route=v).observe(100 * (seed + i))
        h.labels(model=v).observe(0.0007 * (seed + i) ** 3)
        h.labels(model=v).observe(3e6 if i == seed % 6 else 0.05)
    plain.inc(seed)
    neg.observe(-0.5 * seed)
    neg.observe(0.75)
    for mode in ["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
                 "mostrecent", "livemostrecent"]:
        g = prom.Gauge("mp_level_%s_value" % mode, "Gauge in mode " + mode, ["model"],
                       multiprocess_mode=mode, registry=registry)
        for i, v in enumerate(HOSTILE[:3]):
            child = g.labels(model=v)
            if mode.endswith("mostrecent"):
                child.set(seed * 10 + i)
            else:
                child.set(seed * 10 - i * 3 + (seed % 2) * 0.5)
                child.inc(0.25)
        if mode.endswith("mostrecent"):
            g.labels(model="initialised, never set")  # Python leaves it out (timestamp 0)


def cmd_write(a):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = a.dir
    import prometheus_client as prom
    registry = prom.CollectorRegistry()
    if a.families == "sglang":
        metrics = make_sglang(prom, registry)
        write_sglang(metrics, a.seed, {"model_name": HOSTILE[a.seed % len(HOSTILE)],
                                       "tp_rank": str(a.seed % 2)})
    elif a.role != "writer":
        write_mixed(prom, registry, a.seed)
    if a.role == "writer":
        ops = prom.Counter("mpw_ops", "Operations of the busy writer.", ["slot"], registry=registry)
        lat = prom.Histogram("mpw_latency_seconds", "Writer latency.", buckets=[0.01, 0.05, 0.1],
                             registry=registry)
        last = prom.Gauge("mpw_last", "Writer's latest step.", multiprocess_mode="mostrecent",
                          registry=registry)
        live = prom.Gauge("mpw_live", "Writer's live sum.", multiprocess_mode="livesum",
                          registry=registry)
        i = 0
        print("ready %d" % os.getpid(), flush=True)
        deadline = time.time() + a.max_seconds
        while time.time() < deadline:
            for _ in range(200):
                i += 1
                ops.labels(slot=str(i % 3000)).inc()
                lat.observe((i % 7) * 0.02)
                last.set(i)
                live.inc()
            if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
                return
        return
    print("ready %d" % os.getpid(), flush=True)
    if a.role == "stay":
        deadline = time.time() + a.max_seconds
        while time.time() < deadline:
            if select.select([sys.stdin], [], [], 0.2)[0] and not sys.stdin.read(1):
                return


def reference(directory, openmetrics=False):
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    if openmetrics:
        from prometheus_client.openmetrics.exposition import generate_latest
    else:
        from prometheus_client.exposition import generate_latest
    return generate_latest(registry).decode("utf-8")


def parse(text, openmetrics, strip, rename):
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        samples = {}
        for s in fam.samples:
            labels = {rename.get(k, k): v for k, v in s.labels.items() if k not in strip}
            samples[(s.name, tuple(sorted(labels.items())))] = s.value
        out[fam.name] = (fam.type, fam.documentation, samples)
    return out


def om_names(parsed):
    return {n.replace(":", "_"): (t, d, {(sn.replace(":", "_"), lab): v for (sn, lab), v in s.items()})
            for n, (t, d, s) in parsed.items()}


def same(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def cmd_compare(a):
    strip = set(a.strip.split(",")) if a.strip else set()
    rename = {"exported_" + k: k for k in strip}
    om = a.openmetrics
    # Expected: the directory as it is, with the dead pids' live files gone, as
    # mark_process_dead would have left it.
    from prometheus_client.multiprocess import mark_process_dead
    # Python's own OpenMetrics output of a histogram with negative buckets keeps _sum
    # and _count, which its OpenMetrics parser then rejects; the reference is parsed
    # from the text format, without those samples, when the exporter is asked for
    # OpenMetrics.
    raw_before = parse(reference(a.dir), False, set(), {})
    copy = tempfile.mkdtemp(prefix="mp-ref")
    try:
        for f in os.listdir(a.dir):
            shutil.copy(os.path.join(a.dir, f), copy)
        for pid in a.dead:
            mark_process_dead(pid, copy)
        expected = parse(reference(copy), False, set(), {})
    finally:
        shutil.rmtree(copy)
    if om:
        # prometheus_client's OpenMetrics writer names samples with `_` for `:`; the
        # exporter names their family so too (docs/engine-metrics.md, "OpenMetrics").
        raw_before, expected = om_names(raw_before), om_names(expected)
        for name, (typ, _, samples) in expected.items():
            negative = any(dict(lab).get("le", "").startswith("-") for (_, lab) in samples)
            if typ == "histogram" and negative:
                for k in [k for k in samples if k[0].endswith(("_sum", "_count"))]:
                    del samples[k]
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if om else {}
    req = urllib.request.Request(a.url, headers=headers)
    body = urllib.request.urlopen(req, timeout=30).read().decode("utf-8")
    after = parse(reference(a.dir), False, set(), {})
    if om:
        after = om_names(after)
    got = parse(body, om, strip, rename)
    errors = []
    checked = 0
    for name in sorted(set(expected) | set(got) | set(after)):
        writer = name.startswith("mpw_")
        exp = (after if writer else expected).get(name)
        g = got.get(name)
        if exp is None or g is None:
            errors.append("family %s: expected %s, got %s" % (name, exp is not None, g is not None))
            continue
        if exp[0] != g[0] or exp[1] != g[1]:
            errors.append("family %s: type/help %r vs %r" % (name, exp[:2], g[:2]))
        if not writer:
            for k in sorted(set(exp[2]) | set(g[2])):
                checked += 1
                if k not in exp[2] or k not in g[2] or not same(exp[2][k], g[2][k]):
                    errors.append("%s %s: expected %s, got %s" % (name, k, exp[2].get(k), g[2].get(k)))
            continue
        # The busy writer's series only grow: before <= served <= after.
        before = raw_before.get(name, (None, None, {}))[2]
        for k, v in g[2].items():
            checked += 1
            if k not in exp[2] or v > exp[2][k] or (k in before and v < before[k]):
                errors.append("writer %s %s: %s not within [%s, %s]" % (name, k, v, before.get(k), exp[2].get(k)))
        for k in before:
            if k not in g[2]:
                errors.append("writer %s %s: present before, missing in the served body" % (name, k))
    dead_live = sum(1 for n, (_, _, s) in raw_before.items() for (sn, lab) in s
                    if dict(lab).get("pid") in a.dead)
    print(json.dumps({"ok": not errors, "errors": errors[:20], "checked": checked,
                      "families": len(got), "dead_pid_samples_in_raw_python": dead_live,
                      "body_bytes": len(body)}))
    return 0 if not errors else 1


def cmd_bench_proc(a):
    """One of the benchmark's engine processes: SGLang's families, its own tp_rank."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = a.dir
    import prometheus_client as prom
    metrics = make_sglang(prom, prom.CollectorRegistry())
    write_sglang(metrics, a.seed, {"tp_rank": str(a.seed), "model_name": "bench-model"})
    print("ready %d" % os.getpid(), flush=True)
    deadline = time.time() + a.max_seconds
    while time.time() < deadline:
        if select.select([sys.stdin], [], [], 0.5)[0] and not sys.stdin.read(1):
            return


def cmd_bench_write(a):
    """Starts --procs real writer processes, prints the directory's size once all of
    them have written, and keeps them alive (as an engine's are) until stdin closes."""
    import subprocess
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "bench-proc",
                               "--dir", a.dir, "--seed", str(p), "--max-seconds", str(a.max_seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for p in range(a.procs)]
    try:
        for pr in procs:
            if not pr.stdout.readline().startswith(b"ready"):
                raise SystemExit("a bench writer failed")
        files = os.listdir(a.dir)
        size = sum(os.path.getsize(os.path.join(a.dir, f)) for f in files)
        print(json.dumps({"files": len(files), "bytes": size, "procs": len(procs),
                          "families": len(sglang_defs()[0])}), flush=True)
        deadline = time.time() + a.max_seconds
        while time.time() < deadline:
            if select.select([sys.stdin], [], [], 0.5)[0] and not sys.stdin.read(1):
                break
    finally:
        for pr in procs:
            pr.stdin.close()
        for pr in procs:
            try:
                pr.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pr.kill()


def cmd_bench_python(a):
    reference(a.dir)
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        body = reference(a.dir)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0],
                      "samples": sum(1 for line in body.splitlines() if not line.startswith("#"))}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--dir", required=True)
    w.add_argument("--role", choices=["stay", "exit", "writer"], required=True)
    w.add_argument("--families", choices=["mixed", "sglang"], default="mixed")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--max-seconds", type=float, default=120)
    c = sub.add_parser("compare")
    c.add_argument("--dir", required=True)
    c.add_argument("--url", required=True)
    c.add_argument("--strip", default="")
    c.add_argument("--dead", action="append", default=[])
    c.add_argument("--openmetrics", action="store_true")
    sub.add_parser("sglang-defs")
    b = sub.add_parser("bench-write")
    b.add_argument("--dir", required=True)
    b.add_argument("--procs", type=int, default=64)
    b.add_argument("--max-seconds", type=float, default=600)
    bp = sub.add_parser("bench-proc")
    bp.add_argument("--dir", required=True)
    bp.add_argument("--seed", type=int, required=True)
    bp.add_argument("--max-seconds", type=float, default=600)
    r = sub.add_parser("bench-python")
    r.add_argument("--dir", required=True)
    r.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    if a.cmd == "write":
        cmd_write(a)
    elif a.cmd == "compare":
        sys.exit(cmd_compare(a))
    elif a.cmd == "sglang-defs":
        defs, skipped = sglang_defs()
        print(json.dumps({"defs": defs, "skipped": skipped}))
    elif a.cmd == "bench-write":
        cmd_bench_write(a)
    elif a.cmd == "bench-proc":
        cmd_bench_proc(a)
    else:
        cmd_bench_python(a)


if __name__ == "__main__":
    main()
