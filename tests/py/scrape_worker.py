"""Engine workers for tests/scrape.rs and `fpm-bench --only fanin`: real HTTP servers.

Modes:
  single     prometheus_client's own HTTP server over a CollectorRegistry with known values
  multiproc  prometheus_client's HTTP server over MultiProcessCollector of a directory
             this process writes (PROMETHEUS_MULTIPROC_DIR)
  file       serves a file as text 0.0.4 (the SMG fixture, or a bench exposition), or
             as OpenMetrics with --openmetrics, whatever the request asks for
  sglang-http  prometheus_client's own WSGI app (it negotiates the format by Accept and
             compresses when asked) over SGLang 0.5.23's family set; it also counts the
             requests that asked for gzip in scrape_worker_gzip_requests_total
  sglang-om  the OpenMetrics body prometheus_client 0.26 writes for SGLang's family set,
             whatever the request asks for (a server that only answers OpenMetrics)
  gzip-bomb  answers gzip (Content-Encoding) that inflates to --mib MiB of samples
  slow       accepts, then answers only after --delay seconds
  huge       answers with --mib MiB of valid-looking samples, chunked, no Content-Length
  garbage    answers 200 text/plain with bytes that are no exposition
  files      --count servers of one --file each on its own port ("ready P1,P2,...")
  sglang-exposition  writes SGLang 0.5.23's family set (definitions extracted from
             the wheel by tests/py/multiproc.py) with the real prometheus_client's
             generate_latest to --file, prints {"samples": N, "bytes": B}
  parse-python       times prometheus_client.parser.text_string_to_metric_families
             on --file, prints {"median_ms": ..., "samples": N}

Prints "ready PORT" once listening, then serves until stdin closes or --max-seconds.
The values of `single` and `multiproc` are fixed so the Rust test computes them itself:
  requests_total{path=...}   3 * (index + 1) for each of PATHS
  queue_depth                42.5
  latency_seconds            observations 0.05, 0.3, 2.0, 7.0 with buckets 0.1, 1, 5
"""

import argparse
import http.server
import json
import os
import sys
import threading
import time

PATHS = ["/a", 'q"uote', "back\\slash", "new\nline", "ünï"]
OBSERVATIONS = [0.05, 0.3, 2.0, 7.0]
BUCKETS = [0.1, 1.0, 5.0]


def fill(prom, registry, **kw):
    c = prom.Counter("requests", "Requests served.", ["path"], registry=registry)
    for i, p in enumerate(PATHS):
        c.labels(p).inc(3 * (i + 1))
    g = prom.Gauge("queue_depth", "Requests queued.", registry=registry, **kw)
    g.set(42.5)
    h = prom.Histogram("latency_seconds", "Latency.", buckets=BUCKETS, registry=registry)
    for o in OBSERVATIONS:
        h.observe(o)


class Raw(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked bodies need it
    mode = "file"
    payload = b""
    delay = 30.0
    mib = 50
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.mode == "slow":
            time.sleep(self.delay)
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        if self.mode == "gzip-bomb":
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(self.payload)))
            self.end_headers()
            try:
                self.wfile.write(self.payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if self.mode == "huge":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            line = b"filler_metric{i=\"%d\"} 1\n"
            block = b"".join(line % i for i in range(20000))
            sent = 0
            try:
                while sent < self.mib << 20:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    sent += len(block)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        body = self.payload if self.mode != "garbage" else b"\x00\x01 not { an exposition\n" * 100
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class V6Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def sglang_registry():
    """A registry with SGLang 0.5.23's family set, every family given values."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import multiproc as mp
    import prometheus_client as prom

    registry = prom.CollectorRegistry()
    metrics = mp.make_sglang(prom, registry)
    mp.write_sglang(metrics, 3, {"tp_rank": "0", "model_name": "bench-model"})
    return registry


def sglang_http(host):
    """prometheus_client's WSGI app over SGLang's families, on its own threaded server."""
    import prometheus_client as prom
    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
    from wsgiref.simple_server import make_server

    registry = sglang_registry()
    gzip_asked = prom.Counter("scrape_worker_gzip_requests", "Requests that asked for gzip.",
                              registry=registry)
    app = prom.make_wsgi_app(registry)

    def counting(environ, start_response):
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            gzip_asked.inc()
        return app(environ, start_response)

    server = make_server(host, 0, counting, ThreadingWSGIServer, handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_port


def sglang_exposition(path):
    import prometheus_client as prom

    body = prom.generate_latest(sglang_registry())
    with open(path, "wb") as f:
        f.write(body)
    n = sum(1 for l in body.decode().splitlines() if l and not l.startswith("#"))
    print(json.dumps({"samples": n, "bytes": len(body)}))


def parse_python(path, runs):
    from prometheus_client.parser import text_string_to_metric_families

    text = open(path, encoding="utf-8").read()
    times, n = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        n = sum(len(f.samples) for f in text_string_to_metric_families(text))
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"median_ms": times[len(times) // 2], "samples": n}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["single", "multiproc", "file", "slow", "huge", "garbage",
                                    "files", "sglang-exposition", "parse-python",
                                    "sglang-http", "sglang-om", "gzip-bomb"])
    p.add_argument("--openmetrics", action="store_true")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--file")
    p.add_argument("--dir")
    p.add_argument("--delay", type=float, default=30.0)
    p.add_argument("--mib", type=int, default=50)
    p.add_argument("--max-seconds", type=float, default=120)
    a = p.parse_args()
    if a.mode == "sglang-exposition":
        return sglang_exposition(a.file)
    if a.mode == "parse-python":
        return parse_python(a.file, a.runs)
    if a.mode == "multiproc":
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = a.dir
    import prometheus_client as prom
    from prometheus_client import multiprocess

    if a.mode == "sglang-http":
        port = sglang_http(a.host)
    elif a.mode in ("single", "multiproc"):
        registry = prom.CollectorRegistry()
        if a.mode == "multiproc":
            fill(prom, None, multiprocess_mode="mostrecent")
            multiprocess.MultiProcessCollector(registry)
        else:
            fill(prom, registry)
        server, _ = prom.start_http_server(0, addr=a.host, registry=registry)
        port = server.server_port
    elif a.mode == "files":
        Raw.mode = "file"
        with open(a.file, "rb") as f:
            Raw.payload = f.read()
        ports = []
        for _ in range(a.count):
            server = V6Server((a.host, 0), Raw)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            ports.append(str(server.server_address[1]))
        port = ",".join(ports)
    else:
        Raw.mode = a.mode
        Raw.delay = a.delay
        Raw.mib = a.mib
        if a.openmetrics or a.mode == "sglang-om":
            Raw.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
        if a.file:
            with open(a.file, "rb") as f:
                Raw.payload = f.read()
        if a.mode == "gzip-bomb":
            import zlib

            # Compressed once: every answer is the same few hundred KiB.
            z = zlib.compressobj(9, zlib.DEFLATED, 31)
            block = b"bomb_metric 1\n" * 65536
            parts = [z.compress(block) for _ in range((a.mib << 20) // len(block) + 1)]
            Raw.payload = b"".join(parts) + z.flush()
        if a.mode == "sglang-om":
            from prometheus_client.openmetrics.exposition import generate_latest as om_latest

            Raw.payload = om_latest(sglang_registry())
        import socket

        V6Server.address_family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
        server = V6Server((a.host, 0), Raw)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
    print("ready", port, flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(a.max_seconds)
    os._exit(0)


if __name__ == "__main__":
    main()
