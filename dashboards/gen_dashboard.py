#!/usr/bin/env python3
"""Generates dashboards/fpm-exporter.json, the Grafana dashboard of fpm-exporter.

The JSON is committed; edit this file and re-run it rather than editing the JSON by
hand (tests/dashboards.rs fails when the two disagree):

    python3 dashboards/gen_dashboard.py > dashboards/fpm-exporter.json

Standard library only. Every query uses the template variables $job, $engine, $node,
$worker_id, $dp_rank and $window, and the data source variable ${datasource}.

$job is multi-valued: across a fleet the edges (one job, every node) serve the ranks
they relay and the central exporter the ranks no edge relays, each rank once, so the
panels read both jobs and sum an engine over its nodes without counting a rank twice.
"""

import json
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}

# Label selectors shared by the queries.
R = 'job=~"$job", engine=~"$engine", node=~"$node", worker_id=~"$worker_id", dp_rank=~"$dp_rank"'  # per rank
E = 'job=~"$job", engine=~"$engine", node=~"$node"'  # per engine (and node, on edges)
EP = 'job=~"$job", engine=~"$engine", node=~"$node", dp_rank=~"$dp_rank"'  # per endpoint (no worker_id)
X = 'job=~"$job"'  # the exporter itself
RANK = "{{engine}}/{{node}}/{{worker_id}}/{{dp_rank}}"

_ids = iter(range(1, 1000))


def target(expr, legend="", ref="A", instant=False, table=False):
    t = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend}
    if instant:
        t.update({"instant": True, "range": False})
    else:
        t.update({"instant": False, "range": True})
    if table:
        t["format"] = "table"
    return t


def targets(*pairs):
    return [target(e, l, ref=chr(ord("A") + i)) for i, (e, l) in enumerate(pairs)]


def row(title, y):
    return {"type": "row", "id": next(_ids), "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}


def stat(title, expr, x, y, unit="short", desc="", red_above=None, w=3):
    steps = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {
        "type": "stat", "id": next(_ids), "title": title, "description": desc, "datasource": DS,
        "gridPos": {"h": 4, "w": w, "x": x, "y": y},
        "targets": [target(expr)],
        "fieldConfig": {"defaults": {"unit": unit,
                                     "thresholds": {"mode": "absolute", "steps": steps},
                                     "color": {"mode": "thresholds"}}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background" if red_above is not None else "value",
                    "graphMode": "area", "justifyMode": "auto", "orientation": "auto",
                    "textMode": "auto"},
    }


def ts(title, tgts, x, y, w=12, h=8, unit="short", desc="", bars=False, legend_table=False):
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 10,
              "showPoints": "never", "spanNulls": False}
    return {
        "type": "timeseries", "id": next(_ids), "title": title, "description": desc, "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "targets": tgts,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "table" if legend_table else "list", "placement": "bottom",
                               "showLegend": True, "calcs": ["lastNotNull", "max"] if legend_table else []},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def state_timeline(title, tgts, x, y, w=12, h=8, desc=""):
    def mapping(value, text, color):
        return {"type": "value", "options": {str(value): {"text": text, "color": color, "index": value}}}
    return {
        "type": "state-timeline", "id": next(_ids), "title": title, "description": desc, "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "targets": tgts,
        "fieldConfig": {"defaults": {"color": {"mode": "thresholds"},
                                     "mappings": [mapping(0, "stale", "red"), mapping(1, "idle", "blue"),
                                                  mapping(2, "busy", "green")],
                                     "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None}]}},
                        "overrides": []},
        "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.8,
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "single", "sort": "none"}},
    }


def bars(title, tgts, x, y, w=12, h=8, unit="short", desc=""):
    """A horizontal bar per series at the latest value: the heavy rank stands out."""
    return {
        "type": "bargauge", "id": next(_ids), "title": title, "description": desc, "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "targets": tgts,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0, "color": {"mode": "continuous-GrYlRd"},
                                     "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                    "valueMode": "color", "namePlacement": "left", "sizing": "auto"},
    }


def var(name, label, query, multi=True, include_all=True):
    v = {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query, "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all,
        "current": {}, "options": [], "hide": 0, "regex": "",
    }
    if include_all:
        # ".*" rather than a list of values, so that an empty worker_id (SGLang
        # launched without Dynamo) and ranks appearing later still match.
        v["allValue"] = ".*"
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return v


def panels():
    p = []
    y = 0
    p.append(row("Fleet overview", y))
    y += 1
    p += [
        stat("Ranks up", f"sum(fpm_up{{{R}}})", 0, y,
             desc="Ranks sending frames (busy or idle heartbeats)."),
        stat("Ranks stale", f'sum(fpm_rank_state{{{R}, state="stale"}})', 3, y, red_above=1,
             desc="Ranks silent for longer than --stale-after: hung, dead or disconnected."),
        stat("Ranks expired (1h)", f"sum(increase(fpm_engine_ranks_expired_total{{{E}}}[1h]))", 6, y,
             red_above=1, desc="Ranks removed after --expire-after of silence, in the last hour."),
        stat("Iterations/s", f"sum(rate(fpm_iterations_total{{{R}}}[$__rate_interval]))", 9, y,
             desc="Forward passes per second, all selected ranks."),
        stat("Prefill tokens/s", f"sum(rate(fpm_prefill_tokens_total{{{R}}}[$__rate_interval]))", 12, y,
             desc="Prompt tokens computed per second (prefix-cache hits excluded)."),
        stat("Decode tokens/s", f"sum(rate(fpm_decode_request_iterations_total{{{R}}}[$__rate_interval]))", 15, y,
             desc="Tokens generated per second: one per scheduled decode request per iteration."),
        stat("Queued requests",
             f"sum(fpm_last_queued_prefill_requests{{{R}}} + fpm_last_queued_decode_requests{{{R}}})", 18, y,
             desc="Requests waiting for prefill plus decodes waiting (preempted or in transfer), after each rank's latest iteration."),
        stat("Busy fraction", f"avg(rate(fpm_wall_time_seconds_total{{{R}}}[$__rate_interval]))", 21, y,
             unit="percentunit", desc="Mean share of wall-clock time the selected ranks spend in forward passes."),
    ]
    y += 4
    p += [
        ts("Ranks by state", targets((f"sum by (engine, state) (fpm_engine_ranks{{{E}}})", "{{engine}} {{state}}")),
           0, y, w=8, desc="busy: latest frame an iteration; idle: heartbeats only; stale: silent."),
        ts("Throughput by engine (1m rate)", targets(
            (f"engine:fpm_prefill_tokens:rate1m{{{E}}}", "{{engine}} prefill tokens/s"),
            (f"engine:fpm_decode_tokens:rate1m{{{E}}}", "{{engine}} decode tokens/s"),
            (f"engine:fpm_iterations:rate1m{{{E}}}", "{{engine}} iterations/s")),
           8, y, w=8, desc="From the recording rules in fpm-rules.yml."),
        ts("Queue depth by engine (requests)", targets(
            (f"engine:fpm_queued_requests:sum{{{E}}}", "{{engine}}")),
           16, y, w=8, desc="Queued prefill plus queued decode requests, summed over the engine's ranks."),
    ]
    y += 8
    p.append(ts("Firing and pending FPM alerts", [target('ALERTS{alertname=~"Fpm.*"}', "{{alertstate}} {{alertname}} {{engine}}/{{node}}/{{dp_rank}}")],
                0, y, w=24, h=5, desc="Alerts from fpm-rules.yml, as Prometheus evaluates them.", bars=True))
    y += 5

    p.append(row("Per engine and rank", y))
    y += 1
    p += [
        ts("Iteration wall time per engine ($window window)", targets(
            (f'fpm_engine_wall_time_window_seconds{{{E}, window="$window"}}', "{{engine}} {{node}} p{{quantile}}")),
           0, y, unit="s", desc="Quantiles over the engine's ranks on each node (quantile 1 is the max): an exporter computes them over the ranks it sees."),
        ts("Iteration wall time per rank, p50 and p99 ($window window)", targets(
            (f'fpm_wall_time_window_seconds{{{R}, window="$window", quantile=~"0.5|0.99"}}', RANK + " p{{quantile}}")),
           12, y, unit="s"),
    ]
    y += 8
    p += [
        state_timeline("Rank state", targets(
            (f'2 * fpm_rank_state{{{R}, state="busy"}} + ignoring(state) fpm_rank_state{{{R}, state="idle"}}', RANK)),
           0, y, desc="busy (green): iterating; idle (blue): heartbeats only; stale (red): silent."),
        ts("Busy fraction per rank (1m)", targets((f"fpm:busy_fraction:rate1m{{{R}}}", RANK)),
           12, y, unit="percentunit", desc="Share of time in forward passes, from the recording rule."),
    ]
    y += 8
    p += [
        ts("Iterations/s per rank", targets((f"rate(fpm_iterations_total{{{R}}}[$__rate_interval])", RANK)), 0, y),
        ts("Tokens/s per rank", targets(
            (f"rate(fpm_prefill_tokens_total{{{R}}}[$__rate_interval])", "prefill " + RANK),
            (f"rate(fpm_decode_request_iterations_total{{{R}}}[$__rate_interval])", "decode " + RANK)), 12, y),
    ]
    y += 8
    p += [
        ts("Prefill tokens: scheduled per iteration vs queued", targets(
            (f'fpm_window_mean{{{R}, window="$window", field="scheduled_requests.sum_prefill_tokens"}}', "scheduled " + RANK),
            (f"fpm_last_queued_prefill_tokens{{{R}}}", "queued " + RANK)),
           0, y, desc="Scheduled: mean prompt tokens computed per iteration over the window. Queued: prompt tokens waiting after the latest iteration."),
        ts("Requests: scheduled vs queued", targets(
            (f'fpm_window_mean{{{R}, window="$window", field="scheduled_requests.num_decode_requests"}}', "decoding " + RANK),
            (f'fpm_window_mean{{{R}, window="$window", field="scheduled_requests.num_prefill_requests"}}', "prefilling " + RANK),
            (f"fpm_last_queued_prefill_requests{{{R}}}", "queued prefill " + RANK),
            (f"fpm_last_queued_decode_requests{{{R}}}", "queued decode " + RANK)),
           12, y, desc="Window means of the batch composition, and the latest queue lengths."),
    ]
    y += 8
    p += [
        ts("KV context (tokens)", targets(
            (f"fpm_last_scheduled_decode_kv_tokens{{{R}}}", "decode KV " + RANK),
            (f'fpm_window_mean{{{R}, window="$window", field="scheduled_requests.sum_prefill_kv_tokens"}}', "prefill KV read (cache hits) " + RANK),
            (f"fpm_last_queued_decode_kv_tokens{{{R}}}", "queued decode KV " + RANK)),
           0, y, desc="KV tokens the decoding requests attend to, prefix-cache tokens read per prefill iteration, and KV of decodes waiting."),
        ts("Prompt length spread", targets(
            (f'sqrt(fpm_engine_window_mean{{{E}, window="$window", field="scheduled_requests.var_prefill_length"}})', "σ scheduled {{engine}}"),
            (f'sqrt(fpm_engine_window_mean{{{E}, window="$window", field="queued_requests.var_prefill_length"}})', "σ queued {{engine}}"),
            (f"fpm_last_queued_prefill_tokens{{{R}}} / (fpm_last_queued_prefill_requests{{{R}}} > 0)", "mean queued prompt " + RANK)),
           12, y, desc="Standard deviation of prompt lengths within a batch, per engine (square root of the mean population variance over the window, all ranks: a workload property, and engine-level so it reads at --rank-detail lean), and the mean length of each rank's waiting prompts."),
    ]
    y += 8
    p.append(row("Balance across ranks", y))
    y += 1
    p += [
        ts("Work imbalance per engine ($window window)", targets(
            (f'engine:fpm_imbalance_ratio:max{{{E}, window="$window"}}', "{{engine}} (largest)"),
            (f'fpm_engine_imbalance_ratio{{{E}, window="$window"}}', "{{engine}} {{node}} {{measure}}")),
           0, y, desc="Heaviest rank's mean work per iteration over the mean of the engine's live busy ranks: 1 = even, N = one of N ranks does it all. FpmEngineImbalanced fires above 1.5 for 10 minutes on the same rank. Definition: docs/metrics.md."),
        ts("Lock-step waiting share and heaviest rank ($window window)", targets(
            (f'fpm_engine_lockstep_wait_ratio{{{E}, window="$window"}}', "waiting {{engine}} {{node}} {{measure}}")),
           12, y, unit="percentunit", desc="Estimated share of the ranks' time spent waiting on the heaviest rank if they step together (DP attention): 1 - mean/max of the work. The heaviest rank: the bar panels below, or fpm_engine_imbalance_heaviest_dp_rank."),
    ]
    y += 8
    p += [
        bars("Prefill tokens per iteration, by rank ($window window)", targets(
            (f'fpm_window_mean{{{R}, window="$window", field="scheduled_requests.sum_prefill_tokens"}}', RANK)),
           0, y, w=8, desc="Mean prompt tokens computed per iteration over the window: the longest bar is the rank the others wait on."),
        bars("Decode KV tokens per iteration, by rank ($window window)", targets(
            (f'fpm_window_mean{{{R}, window="$window", field="scheduled_requests.sum_decode_kv_tokens"}}', RANK)),
           8, y, w=8, desc="Mean KV context of the decoding requests per iteration over the window."),
        ts("Straggler ratio per rank ($window window)", targets(
            (f'fpm_rank_straggler_ratio{{{R}, window="$window"}}', RANK),
            (f'fpm_engine_imbalance_heaviest_dp_rank{{{E}, window="$window", measure="prefill_tokens"}}', "heaviest prefill rank {{engine}} {{node}}")),
           16, y, w=8, desc="Wall time per scheduled token over the median of the engine's other ranks: 2 = twice as slow for the same work. FpmRankStraggler fires above 1.5 for 10 minutes when the rank's iterations are also longer than its engine's. Also the dp_rank of each engine's heaviest prefill rank."),
    ]
    y += 8
    p.append(row("Health", y))
    y += 1
    p += [
        ts("Missed frames/s per rank", targets(
            (f"rate(fpm_missed_frames_total{{{R}}}[$__rate_interval])", "live " + RANK),
            (f"rate(fpm_reconnect_missed_frames_total{{{R}}}[$__rate_interval])", "reconnect " + RANK)),
           0, y, w=8, desc="Frames the publisher numbered but the exporter never got: dropped on a live connection (live), or sent while no connection carried them (reconnect: jumps across a reconnect, a lower bound)."),
        ts("Frame loss ratio (5m)", targets((f"fpm:frame_loss_ratio:rate5m{{{R}}}", RANK)),
           8, y, w=8, unit="percentunit", desc="From the recording rule; FpmFrameLoss fires above 1%."),
        ts("Publisher restarts (per 5m)", targets((f"increase(fpm_publisher_restarts_total{{{R}}}[5m])", RANK)),
           16, y, w=8, bars=True, desc="The rank's sequence fell back to 0: the engine restarted."),
    ]
    y += 8
    p += [
        ts("Decode errors/s by reason", targets(
            (f"sum by (engine, node, dp_rank, reason) (rate(fpm_decode_errors_total{{{EP}}}[$__rate_interval]))",
             "{{engine}}/{{node}}/{{dp_rank}} {{reason}}")),
           0, y, w=8, desc="Messages skipped as invalid FPM frames, per endpoint and reason."),
        ts("Endpoint connected", targets((f"fpm_endpoint_connected{{{EP}}}", "{{engine}}/{{node}}/{{dp_rank}} {{endpoint}}")),
           8, y, w=8, desc="1 while the SUB socket is connected to the rank's publisher."),
        ts("Scrape target up", targets((f"up{{{X}}}", "{{instance}}")), 16, y, w=8,
           desc="Prometheus' own view of the exporter targets."),
    ]
    y += 8
    p.append(ts("NATS path: frames lost/s", targets(
        (f"sum by (instance) (rate(fpm_nats_relay_dropped_frames_total{{{X}}}[$__rate_interval]))", "relay dropped {{instance}}"),
        (f"rate(fpm_nats_missed_messages_total{{{X}}}[$__rate_interval])", "gaps at central {{instance}}")),
        0, y, w=24, h=6, desc="Across a fleet: frames an edge did not relay (by any reason) and gaps the central exporter found in the relayed or Dynamo-published sequences. FpmNatsLoss fires on either. A rank's own loss counters (above) are its edge's, for the ZMQ hop."))
    y += 6
    p += [
        ts("Exporter CPU (cores)", targets((f"rate(process_cpu_seconds_total{{{X}}}[$__rate_interval])", "{{instance}}")),
           0, y, w=8),
        ts("Exporter resident memory", targets((f"process_resident_memory_bytes{{{X}}}", "{{instance}}")),
           8, y, w=8, unit="bytes"),
        ts("Exporter load", targets(
            (f"fpm_exporter_ranks_tracked{{{X}}}", "ranks tracked {{instance}}"),
            (f"fpm_exporter_ranks_limit{{{X}}}", "rank limit {{instance}}"),
            (f"fpm_exporter_stream_clients{{{X}}}", "stream clients {{instance}}"),
            (f"rate(fpm_exporter_refused_frames_total{{{X}}}[$__rate_interval])", "refused frames/s {{instance}}")),
           16, y, w=8),
    ]
    return p


def dashboard():
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "uid": "fpm-exporter",
        "title": "Forward-pass metrics (fpm-exporter)",
        "description": "LLM engines' forward-pass metrics re-exported by fpm-exporter: fleet, per rank, health.",
        "tags": ["fpm-exporter", "llm", "inference"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            var("job", "Job", "label_values(fpm_exporter_build_info, job)"),
            var("engine", "Engine", 'label_values(fpm_engine_ranks{job=~"$job"}, engine)'),
            var("node", "Node", 'label_values(fpm_up{job=~"$job", engine=~"$engine"}, node)'),
            var("worker_id", "Worker", 'label_values(fpm_up{job=~"$job", engine=~"$engine", node=~"$node"}, worker_id)'),
            var("dp_rank", "DP rank", 'label_values(fpm_up{job=~"$job", engine=~"$engine", node=~"$node", worker_id=~"$worker_id"}, dp_rank)'),
            var("window", "Window", 'label_values(fpm_window_iterations{job=~"$job"}, window)', multi=False, include_all=False),
        ]},
        "panels": panels(),
    }


if __name__ == "__main__":
    json.dump(dashboard(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
