#!/usr/bin/env python3
"""Draws dashboard panels from real data, for the docs (there is no Grafana here).

Starts fpm-exporter with its built-in simulated engine (or uses one already running,
--exporter-url), starts a real Prometheus (Debian's /usr/bin/prometheus) scraping it
every second with dashboards/fpm-rules.yml loaded, lets it run for --duration
seconds, then evaluates the PromQL of a few panels of dashboards/fpm-exporter.json
over that span (query_range, variables set to "All") and draws them to a PNG.

    target/pyenv/bin/python scripts/plot-demo.py --out docs/img/dashboard-demo.png

Needs matplotlib (scripts/test-deps.sh puts it in target/pyenv) and a built
fpm-exporter binary (cargo build; --exporter-bin to point at it).
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The panels drawn, by title in the dashboard, in reading order.
PANELS = [
    "Throughput by engine (1m rate)",
    "Iterations/s per rank",
    "Iteration wall time per engine ($window window)",
    "Busy fraction per rank (1m)",
    "Prefill tokens: scheduled per iteration vs queued",
    "Queue depth by engine (requests)",
]
# Panels drawn on a log axis: tokens/s and iterations/s are a thousand times apart.
LOG_PANELS = {"Throughput by engine (1m rate)"}
UNITS = {"s": "seconds", "percentunit": "fraction of time", "short": ""}


def log(msg):
    print(f"plot-demo: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def wait_http(url, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"plot-demo: {url} did not answer within {seconds} s")


def find_exporter_bin():
    dirs = [os.environ.get("CARGO_TARGET_DIR"), os.path.join(ROOT, "target")]
    for d in filter(None, dirs):
        for profile in ("release", "debug"):
            p = os.path.join(d, profile, "fpm-exporter")
            if os.access(p, os.X_OK):
                return p
    sys.exit("plot-demo: no fpm-exporter binary found; run `cargo build` or pass --exporter-bin")


def legend_of(fmt, labels):
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def substitute(expr, window, rate_interval):
    for name in ("worker_id", "dp_rank", "engine"):
        expr = expr.replace("$" + name, ".*")
    return (expr.replace("$job", "fpm-exporter").replace("$window", window)
            .replace("$__rate_interval", rate_interval))


def collect(args, panels):
    """Runs exporter and Prometheus; returns {title: [(legend, [t], [v]), ...]} and the span."""
    prom_bin = shutil.which("prometheus")
    if not prom_bin:
        sys.exit("plot-demo: prometheus not on PATH (scripts/test-deps.sh installs it)")
    procs = []
    tmp = tempfile.mkdtemp(prefix="fpm-plot-")
    try:
        target = args.exporter_url
        if not target:
            target = f"127.0.0.1:{free_port()}"
            exe = args.exporter_bin or find_exporter_bin()
            log(f"starting {exe} with {args.demo_ranks} simulated ranks on {target}")
            procs.append(subprocess.Popen(
                [exe, "--listen", target, "--demo-ranks", str(args.demo_ranks)],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "exporter.log"), "w")))
        wait_http(f"http://{target}/metrics", 20)

        prom_port = free_port()
        prom = f"http://127.0.0.1:{prom_port}"
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                f"rule_files:\n  - \"{os.path.join(ROOT, 'dashboards/fpm-rules.yml')}\"\n"
                f"scrape_configs:\n  - job_name: fpm-exporter\n    static_configs:\n      - targets: [\"{target}\"]\n")
        procs.append(subprocess.Popen(
            [prom_bin, f"--config.file={cfg}", f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prometheus.log"), "w")))
        wait_http(f"{prom}/-/ready", 30)
        began = time.time()
        total = args.warmup + args.duration
        log(f"Prometheus at {prom}; collecting {total:g} s of data")
        while time.time() - began < total:
            time.sleep(max(0.0, min(10.0, total - (time.time() - began))))
            log(f"{time.time() - began:.0f} s")
        end = time.time()
        start = end - args.duration

        data = {}
        for title in PANELS:
            series = []
            for t in panels[title]["targets"]:
                q = substitute(t["expr"], args.window, "5s")
                url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(
                    {"query": q, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"})
                for s in get_json(url, timeout=30)["data"]["result"]:
                    series.append((legend_of(t["legendFormat"], s["metric"]),
                                   [float(v[0]) - start for v in s["values"]],
                                   [float(v[1]) for v in s["values"]]))
            if not series:
                sys.exit(f"plot-demo: panel {title!r} has no data")
            data[title] = sorted(series)
        return {"panels": data, "seconds": end - start, "ranks": args.demo_ranks, "window": args.window}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def draw(data, panels, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(14, 13), sharex=True, layout="constrained")
    for ax, title in zip(axes.flat, PANELS):
        series = data["panels"][title]
        for legend, xs, ys in series:
            # "engine/worker/3" legends (the dashboard's) become "rank 3" on paper.
            ax.plot(xs, ys, linewidth=1.2, label=re.sub(r"[^ /]+/[^ /]*/(\d+)", r"rank \1", legend))
        log_scale = title in LOG_PANELS
        if log_scale:
            ax.set_yscale("log")
        ax.set_title(title.replace("$window", data["window"]) + (" (log scale)" if log_scale else ""), fontsize=11)
        unit = panels[title]["fieldConfig"]["defaults"].get("unit", "short")
        ax.set_ylabel(UNITS.get(unit, unit), fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=4, frameon=False)
    fig.suptitle(f"fpm-exporter dashboard panels: simulated engine, {data['ranks']} ranks, "
                 f"{data['seconds']:.0f} s of real Prometheus data (x axis: seconds)", fontsize=13)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=80)
    log(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=90.0, help="seconds of data to draw (default 90)")
    ap.add_argument("--warmup", type=float, default=60.0,
                    help="seconds collected but not drawn first, so the 1m rates start full (default 60)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/img/dashboard-demo.png"))
    ap.add_argument("--exporter-bin", help="fpm-exporter binary (default: target/{release,debug}/fpm-exporter)")
    ap.add_argument("--exporter-url", help="use this running exporter (host:port) instead of starting one")
    ap.add_argument("--demo-ranks", type=int, default=4)
    ap.add_argument("--window", default="10s", help="value of the dashboard's $window variable")
    ap.add_argument("--save-data", help="also write the queried series to this JSON file")
    ap.add_argument("--from-data", help="draw from a file --save-data wrote, without collecting")
    args = ap.parse_args()

    with open(os.path.join(ROOT, "dashboards/fpm-exporter.json")) as f:
        panels = {p["title"]: p for p in json.load(f)["panels"]}
    if args.from_data:
        with open(args.from_data) as f:
            data = json.load(f)
    else:
        data = collect(args, panels)
        if args.save_data:
            with open(args.save_data, "w") as f:
                json.dump(data, f)
    draw(data, panels, args.out)


if __name__ == "__main__":
    main()
