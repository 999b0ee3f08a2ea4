"""A worker exposing SGLang's real metric definitions (sglang 0.5.23's
metrics_collector.py, parsed by multiproc.sglang_defs, never imported) with the real
prometheus_client (0.26.0) over HTTP on 127.0.0.1, for tests/engine_view.rs.

  engine_worker.py [--max-seconds S]
      prints "ready <port>"; then reads commands on stdin, one a line:
        observe SEED N   N deterministic requests: TTFT, inter-token and e2e latency
                         observations, counters and gauges; prints "done <json>" with
                         what it added (so the test can check numbers independently)
        quit             exits (so does closing stdin, or S seconds)
"""

import argparse
import json
import os
import random
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multiproc import sglang_defs  # noqa: E402

import prometheus_client as prom  # noqa: E402

HISTOGRAMS = ["sglang:time_to_first_token_seconds", "sglang:inter_token_latency_seconds",
              "sglang:e2e_request_latency_seconds"]
COUNTERS = ["sglang:num_requests_total", "sglang:num_aborted_requests_total",
            "sglang:prompt_tokens_total", "sglang:generation_tokens_total"]
GAUGES = ["sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage",
          "sglang:cache_hit_rate", "sglang:max_total_num_tokens", "sglang:gen_throughput",
          "sglang:utilization"]
LABELS = {"model_name": "m", "engine_type": "unified", "tp_rank": "0", "pp_rank": "0",
          "moe_ep_rank": "0"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--max-seconds", type=float, default=300)
    a = p.parse_args()
    threading.Timer(a.max_seconds, lambda: os._exit(3)).start()
    defs = {d["name"]: d for d in sglang_defs()[0]}
    registry = prom.CollectorRegistry()
    m = {}
    for name in HISTOGRAMS + COUNTERS + GAUGES:
        d = defs[name]  # KeyError = SGLang no longer defines it: the test must fail
        cls = getattr(prom, d["kind"].capitalize())
        kw = {"name": d["name"], "documentation": d["documentation"],
              "labelnames": d["labelnames"], "registry": registry}
        if "buckets" in d:
            kw["buckets"] = d["buckets"]
        m[name] = (d, cls(**kw))

    def child(name, streaming):
        d, metric = m[name]
        lv = {k: LABELS.get(k, "") for k in d["labelnames"]}
        if "is_streaming" in lv:
            lv["is_streaming"] = streaming
        return metric.labels(**lv)

    # Every series exists from the start, at 0, as SGLang's do once used.
    for name in HISTOGRAMS + COUNTERS:
        for st in ("true", "false"):
            child(name, st)
    server, _ = prom.start_http_server(0, addr="127.0.0.1", registry=registry)
    print("ready %d" % server.server_port, flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        seed, n = int(cmd[1]), int(cmd[2])
        rng = random.Random(seed)
        added = {"requests": 0, "aborted": 0, "prompt": 0, "generation": 0}
        for _ in range(n):
            st = "true" if rng.random() < 0.5 else "false"
            child("sglang:time_to_first_token_seconds", st).observe(rng.lognormvariate(-0.5, 1.0))
            child("sglang:inter_token_latency_seconds", st).observe(rng.lognormvariate(-3.5, 0.7))
            child("sglang:e2e_request_latency_seconds", st).observe(rng.lognormvariate(1.5, 0.9))
            if rng.random() < 0.1:
                child("sglang:num_aborted_requests_total", st).inc()
                added["aborted"] += 1
            else:
                child("sglang:num_requests_total", st).inc()
                added["requests"] += 1
            pt, gt = rng.randint(10, 2000), rng.randint(1, 500)
            child("sglang:prompt_tokens_total", st).inc(pt)
            child("sglang:generation_tokens_total", st).inc(gt)
            added["prompt"] += pt
            added["generation"] += gt
        gauges = {"sglang:num_running_reqs": seed % 7, "sglang:num_queue_reqs": seed % 3,
                  "sglang:token_usage": 0.125 * (seed % 8), "sglang:cache_hit_rate": 0.5,
                  "sglang:max_total_num_tokens": 410615, "sglang:gen_throughput": 450.5,
                  "sglang:utilization": 0.75}
        for name, v in gauges.items():
            child(name, "").set(v)
        added["gauges"] = gauges
        print("done " + json.dumps(added), flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
