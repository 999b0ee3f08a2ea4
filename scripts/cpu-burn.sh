#!/usr/bin/env bash
# Keeps N cores fully busy (default 1) for at most S seconds (default 1800), then
# exits by itself; SIGTERM/SIGINT stop it at once. Used by scripts/test.sh when
# FPM_TEST_CPU_BURN=N is set, to show the suite passes with the machine's other core
# busy; run it by hand beside anything else the same way:
#   bash scripts/cpu-burn.sh 1 600 &  ...  kill $!
set -euo pipefail
n="${1:-1}"
secs="${2:-1800}"
case "$n$secs" in *[!0-9]*) echo "usage: cpu-burn.sh [CORES] [SECONDS]" >&2; exit 2 ;; esac
pids=()
stop() {
    [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null
    wait 2>/dev/null
    exit 0
}
trap stop TERM INT
for _ in $(seq "$n"); do
    # Each burner is a shell spinning at normal priority, bounded by timeout(1).
    timeout "$secs" bash -c 'while :; do :; done' &
    pids+=("$!")
done
echo "cpu-burn: $n busy loop(s) for at most ${secs}s (pids ${pids[*]})" >&2
wait
