#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (Python venv with
# msgspec/pyzmq, the real SGLang publisher module, Debian's prometheus for promtool),
# then runs every Rust test (unit, property, interop with the real publisher,
# promtool on live output, fault and dashboard checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
echo "== cargo test (all targets)" >&2
cargo test --all-targets --locked -- --test-threads=2
