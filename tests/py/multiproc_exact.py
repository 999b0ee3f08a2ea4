"""Line-exact checks of /engine_metrics against the real prometheus_client (0.26.0),
for tests/multiproc_exact.rs.

  multiproc_exact.py spec --dir D --pid P < JSON
      one real process writing exactly the given samples, in the given order, with
      `P` as its multiprocess process identifier (so two runs can write the file of
      one pid, as a restarted container's process with a repeated pid does).
      JSON: [{"kind": "counter|gauge|histogram", "name": ..., "help": ...,
              "labels": {...}, "value": v, "mode": "sum", "buckets": [...]}, ...]
  multiproc_exact.py exact --dir D --url URL --own 'engine="e",worker_addr="D"' [--openmetrics]
      Python's own generate_latest (text, or OpenMetrics) over a MultiProcessCollector
      of D against one GET of URL, line for line: every HELP and TYPE line byte for
      byte, every sample line's `name{labels}` byte for byte (the exporter's own
      labels `--own`, which it puts first, taken out) with the same value.
      Where the exporter differs on purpose (docs/engine-metrics.md, "OpenMetrics"):
      in OpenMetrics, Python writes a family header with the name as written
      (`sglang:x`) over samples named with `:` replaced (`sglang_x_total`), which its
      own parser then reads as untyped families; the exporter names the header as its
      samples. The check applies that one substitution to Python's header lines.
"""

import argparse
import json
import os
import sys
import urllib.request


def cmd_spec(a):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = a.dir
    from prometheus_client import values
    values.ValueClass = values.MultiProcessValue(lambda: int(a.pid))
    import prometheus_client as prom
    registry = prom.CollectorRegistry()
    made = {}
    for op in json.load(sys.stdin):
        labels = op.get("labels", {})
        key = (op["kind"], op["name"])
        m = made.get(key)
        if m is None:
            kw = {"registry": registry, "labelnames": sorted(labels)}
            if "mode" in op:
                kw["multiprocess_mode"] = op["mode"]
            if "buckets" in op:
                kw["buckets"] = op["buckets"]
            m = made[key] = getattr(prom, op["kind"].capitalize())(op["name"], op["help"], **kw)
        child = m.labels(**labels) if labels else m
        if op["kind"] == "counter":
            child.inc(op["value"])
        elif op["kind"] == "gauge":
            child.set(op["value"])
        else:
            child.observe(op["value"])


def reference(directory, openmetrics):
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    if openmetrics:
        from prometheus_client.openmetrics.exposition import generate_latest
    else:
        from prometheus_client.exposition import generate_latest
    return generate_latest(registry).decode("utf-8")


def blocks(text, own="", python_om=False):
    """{header name: (HELP line, TYPE line, sorted [(name{labels}, value)])}."""
    out, cur = {}, None
    for line in text.splitlines():
        if line == "# EOF":
            continue
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            if python_om:
                fixed = name.replace(":", "_")
                line = line.replace("# HELP " + name, "# HELP " + fixed, 1)
                name = fixed
            cur = out.setdefault(name, [line, None, []])
            continue
        if line.startswith("# TYPE "):
            if python_om:
                parts = line.split(" ")
                parts[2] = parts[2].replace(":", "_")
                line = " ".join(parts)
            cur[1] = line
            continue
        prefix, value = line.rsplit(" ", 1)
        if own:
            prefix = prefix.replace("{" + own + ",", "{").replace("{" + own + "}", "")
        cur[2].append((prefix, float(value)))
    return {k: (h, t, sorted(s)) for k, (h, t, s) in out.items()}


def cmd_exact(a):
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if a.openmetrics else {}
    req = urllib.request.Request(a.url, headers=headers)
    body = urllib.request.urlopen(req, timeout=30).read().decode("utf-8")
    want = blocks(reference(a.dir, a.openmetrics), python_om=a.openmetrics)
    got = blocks(body, own=a.own)
    errors, checked = [], 0
    for name in sorted(set(want) | set(got)):
        w, g = want.get(name), got.get(name)
        if w is None or g is None:
            errors.append("family %s: python %s, exporter %s" % (name, w, g))
            continue
        for i, what in [(0, "HELP"), (1, "TYPE")]:
            if w[i] != g[i]:
                errors.append("%s: python %r, exporter %r" % (what, w[i], g[i]))
        checked += len(w[2])
        if w[2] != g[2]:
            errors.append("%s samples: python %r, exporter %r" % (name, w[2], g[2]))
    print(json.dumps({"ok": not errors, "errors": errors[:20], "checked": checked,
                      "body": body if errors else ""}))
    return 0 if not errors else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("spec")
    s.add_argument("--dir", required=True)
    s.add_argument("--pid", required=True)
    e = sub.add_parser("exact")
    e.add_argument("--dir", required=True)
    e.add_argument("--url", required=True)
    e.add_argument("--own", default="")
    e.add_argument("--openmetrics", action="store_true")
    a = p.parse_args()
    if a.cmd == "spec":
        cmd_spec(a)
    else:
        sys.exit(cmd_exact(a))


if __name__ == "__main__":
    main()
