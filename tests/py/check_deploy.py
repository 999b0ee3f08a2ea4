"""Offline checks of deploy/ for tests/deploy.rs.

- Core kinds are validated with kubernetes-validate (strict: unknown fields refused)
  against Kubernetes 1.37's schemas.
- The Prometheus Operator's kinds (ServiceMonitor, PodMonitor, PrometheusRule), for
  which kubernetes-validate ships no schema, are checked structurally: required fields
  and types, and that their selectors and ports name what the other manifests define.
- The PrometheusRule carries exactly dashboards/fpm-rules.yml's groups, and the
  dashboard ConfigMap exactly dashboards/fpm-exporter.json (deploy/gen.py --check).

Writes the rules and the edge's engines.toml into OUTDIR and prints one JSON line with
their paths and the containers' args, so the Rust test can run promtool on the rules and
the exporter's own parser on the config and flags.
"""
import json
import pathlib
import subprocess
import sys

import kubernetes_validate
import re
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
out = pathlib.Path(sys.argv[1])
K8S = "1.37.0"
CRDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def fail(msg):
    sys.exit("check_deploy: " + msg)


docs = []
for path in sorted((ROOT / "deploy").glob("*.yaml")):
    for d in yaml.safe_load_all(path.read_text()):
        if d is not None:
            docs.append((path.name, d))
kinds = {}
for name, d in docs:
    kind = d.get("kind")
    kinds.setdefault(kind, []).append(d)
    if kind in CRDS:
        if d.get("apiVersion") != "monitoring.coreos.com/v1":
            fail("%s: %s apiVersion %r" % (name, kind, d.get("apiVersion")))
        if not isinstance(d.get("metadata", {}).get("name"), str):
            fail("%s: %s without metadata.name" % (name, kind))
        continue
    try:
        kubernetes_validate.validate(d, K8S, strict=True)
    except kubernetes_validate.ValidationError as e:
        fail("%s: %s/%s: %s" % (name, kind, d["metadata"]["name"], e.message))

for needed in ["DaemonSet", "Deployment", "Service", "ConfigMap", "ServiceMonitor", "PodMonitor", "PrometheusRule"]:
    if needed not in kinds:
        fail("no %s in deploy/" % needed)


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def container_ports(workload):
    return {p["name"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}


services = kinds["Service"]
for s in services:
    targets = [w for w in kinds["Deployment"] + kinds["DaemonSet"]
               if matches(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
    if not targets:
        fail("Service %s selects no workload" % s["metadata"]["name"])
    for p in s["spec"]["ports"]:
        if isinstance(p.get("targetPort"), str) and not all(p["targetPort"] in container_ports(w) for w in targets):
            fail("Service %s targetPort %s is no container port" % (s["metadata"]["name"], p["targetPort"]))

for sm in kinds["ServiceMonitor"]:
    spec = sm["spec"]
    sel = spec["selector"]["matchLabels"]
    chosen = [s for s in services if matches(sel, s["metadata"]["labels"])]
    if not chosen:
        fail("ServiceMonitor %s selects no Service" % sm["metadata"]["name"])
    if not isinstance(spec.get("endpoints"), list) or not spec["endpoints"]:
        fail("ServiceMonitor without endpoints")
    for ep in spec["endpoints"]:
        if not any(ep["port"] in {p["name"] for p in s["spec"]["ports"]} for s in chosen):
            fail("ServiceMonitor port %s not on the Service" % ep["port"])
        if ep.get("path", "/metrics") != "/metrics":
            fail("ServiceMonitor path")

# Families of a relayed rank the dashboard and alerts read from the edges.
PER_RANK = ["fpm_up", "fpm_iterations_total", "fpm_missed_frames_total",
            "fpm_publisher_restarts_total", "fpm_engine_ranks", "fpm_window_mean"]
for pm in kinds["PodMonitor"]:
    spec = pm["spec"]
    sel = spec["selector"]["matchLabels"]
    chosen = [w for w in kinds["DaemonSet"] + kinds["Deployment"]
              if matches(sel, w["spec"]["template"]["metadata"]["labels"])]
    if not chosen:
        fail("PodMonitor %s selects no pods" % pm["metadata"]["name"])
    for ep in spec["podMetricsEndpoints"]:
        if not all(ep["port"] in container_ports(w) for w in chosen):
            fail("PodMonitor port %s is no container port" % ep["port"])
        for r in ep.get("metricRelabelings", []):
            if r.get("action") not in ("keep", "drop", "replace", "labeldrop", "labelkeep"):
                fail("PodMonitor relabel action %r" % r.get("action"))
        # The edges serve their ranks' series (the central leaves relayed ranks out at
        # its default): a filter dropping them would blank the dashboards and alerts.
        for name in PER_RANK:
            for r in ep.get("metricRelabelings", []):
                if r.get("sourceLabels") != ["__name__"] or r.get("action") not in ("keep", "drop"):
                    continue
                hit = re.fullmatch(r.get("regex", "(.*)"), name) is not None
                if hit == (r["action"] == "drop"):
                    fail("PodMonitor %s drops the edges' %s" % (pm["metadata"]["name"], name))
        jobs = [r.get("replacement") for r in ep.get("relabelings", []) if r.get("targetLabel") == "job"]
        if jobs != ["fpm-exporter-edge"]:
            fail("PodMonitor must name its job fpm-exporter-edge (the alerts' job), got %r" % jobs)

(rule,) = kinds["PrometheusRule"]
want = yaml.safe_load((ROOT / "dashboards/fpm-rules.yml").read_text())["groups"]
if rule["spec"]["groups"] != want:
    fail("PrometheusRule groups differ from dashboards/fpm-rules.yml (run deploy/gen.py)")
for g in rule["spec"]["groups"]:
    if not isinstance(g.get("name"), str) or not isinstance(g.get("rules"), list):
        fail("rule group shape")
# Its job label: the alert expects job="fpm-exporter", which a ServiceMonitor gives the
# targets of a Service of that name.
if not any(s["metadata"]["name"] == "fpm-exporter" for s in services):
    fail("no Service named fpm-exporter (the alerts' job label)")
# The central must not serve the relayed ranks the edges serve (each rank once).
for d in kinds["Deployment"]:
    for c in d["spec"]["template"]["spec"]["containers"]:
        if any(a.startswith("--nats=") for a in c.get("args", [])) and \
                any(a.replace(" ", "=") == "--nats-relayed-series=central" for a in c.get("args", [])):
            fail("the central serves relayed ranks too while the edges are scraped: double counting")

dash = [c for c in kinds["ConfigMap"] if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
if len(dash) != 1 or dash[0]["data"]["fpm-exporter.json"] != (ROOT / "dashboards/fpm-exporter.json").read_text():
    fail("dashboard ConfigMap differs from dashboards/fpm-exporter.json (run deploy/gen.py)")
r = subprocess.run([sys.executable, str(ROOT / "deploy/gen.py"), "--check"], capture_output=True, text=True)
if r.returncode != 0:
    fail(r.stderr.strip())

(ds,) = kinds["DaemonSet"]
pod = ds["spec"]["template"]["spec"]
if not pod.get("hostNetwork"):
    fail("edge DaemonSet must share the node's network (engines' tcp 127.0.0.1 ports)")
paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
if "/run/sglang" not in paths:
    fail("edge DaemonSet must mount the SGLang ipc directory")
# The engine's own load: a sidecar sharing the pod's memory-backed /dev/shm, as the
# engine's uid, never hostIPC (docs/engine-load.md).
sidecars = [d for d in kinds["Deployment"]
            if any(c["name"] == "fpm-exporter" and any("--load-snapshot" in a for a in c.get("args", []))
                   for c in d["spec"]["template"]["spec"]["containers"])]
if len(sidecars) != 1:
    fail("one Deployment with the exporter as a load-snapshot sidecar expected")
spod = sidecars[0]["spec"]["template"]["spec"]
if spod.get("hostIPC"):
    fail("the load-snapshot sidecar must not use hostIPC")
shm = [v["name"] for v in spod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
for c in spod["containers"]:
    if not any(m["name"] in shm and m["mountPath"] == "/dev/shm" for m in c.get("volumeMounts", [])):
        fail("container %s does not mount the pod's memory emptyDir at /dev/shm" % c["name"])
    if c.get("securityContext", {}).get("runAsUser") not in (None, spod.get("securityContext", {}).get("runAsUser")):
        fail("container %s runs as another uid than the pod (the snapshot file is 0600)" % c["name"])
sidecar = next(c for c in spod["containers"] if c["name"] == "fpm-exporter")
config = [c for c in kinds["ConfigMap"] if "engines.toml" in c.get("data", {})]
(out / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
(out / "engines.toml").write_text(config[0]["data"]["engines.toml"])
print(json.dumps({
    "rules": str(out / "rules.yml"),
    "edge_config": str(out / "engines.toml"),
    "edge_args": pod["containers"][0]["args"],
    "central_args": kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"],
    "sidecar_args": sidecar["args"],
    "checked": len(docs),
}))
