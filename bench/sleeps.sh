#!/usr/bin/env bash
# Sleeps and CPU per request of the front and of each worker process (not their CGIs), the
# counts behind bench/MISSES.md's c=1 analysis: a release gateway (--workers 1, access log
# off) on a fresh classic jail holding bench/cgi/SCRIPT, 1 s of wrk to warm up, then the
# voluntary and involuntary context switches of every thread (/proc/PID/task/*/status) and
# the user + system time (/proc/PID/stat) before and after SECONDS of wrk at CONCURRENCY.
# On a VM, where a sleep and a wake-up cost tens of µs, the sleeps are what grows from c=16
# to c=1. Needs root and wrk; loopback only; the gateway is stopped by its pid and the
# temporary folder removed.
#
#   bench/sleeps.sh [SCRIPT] [CONCURRENCY] [SECONDS] [--bin-dir DIR]
#                                    (default: hello.sh 1 4, target/release, built if missing)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/one_gateway.sh
. "$ROOT/bench/one_gateway.sh"
parse_bench_args 12 "$@"
SCRIPT=${ARGS[0]:-hello.sh}
CONCURRENCY=${ARGS[1]:-1}
SECONDS_EACH=${ARGS[2]:-4}
[ "$(id -u)" = 0 ] || { echo "sleeps.sh: run as root" >&2; exit 2; }
command -v wrk >/dev/null || { echo "sleeps.sh: wrk is missing" >&2; exit 2; }
[ -f "$ROOT/bench/cgi/$SCRIPT" ] || { echo "sleeps.sh: no bench/cgi/$SCRIPT" >&2; exit 2; }
if [ ! -x "$BIN/gateway" ]; then
    cargo build --release --workspace --bins --manifest-path "$ROOT/Cargo.toml" >&2
fi
start_one_gateway "$BIN" "$SCRIPT" 1 sleeps
THREADS=$((CONCURRENCY < 2 ? 1 : 2))
wrk -t"$THREADS" -c"$CONCURRENCY" -d1s "$URL" >/dev/null
# The supervisor's children (the front, and each worker's PID-namespace parent) and theirs
# (the worker itself); the CGIs come and go below the workers and are not counted.
PIDS=$(ps -o pid= --ppid "$GW_PID")
for pid in $PIDS; do PIDS="$PIDS $(ps -o pid= --ppid "$pid" | head -1 || true)"; done
snapshot() {
    local pid task voluntary involuntary
    for pid in $PIDS; do
        [ -r "/proc/$pid/stat" ] || continue
        voluntary=0 involuntary=0
        for task in /proc/"$pid"/task/*; do
            voluntary=$((voluntary + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$task/status")))
            involuntary=$((involuntary + $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$task/status")))
        done
        echo "$pid $(cat "/proc/$pid/comm") $voluntary $involuntary $(awk '{print $14 + $15}' "/proc/$pid/stat")"
    done
}
snapshot >"$WORK/before"
REQUESTS=$(wrk -t"$THREADS" -c"$CONCURRENCY" -d"${SECONDS_EACH}s" "$URL" | awk '/requests in/ {print $1}')
snapshot >"$WORK/after"
TICK=$(getconf CLK_TCK)
echo "$SCRIPT at c=$CONCURRENCY for $SECONDS_EACH s: $REQUESTS requests"
# The same processes in the same order in both: side by side, before's five fields then after's.
paste -d ' ' "$WORK/before" "$WORK/after" | awk -v n="$REQUESTS" -v tick="$TICK" '
    $1 == $6 && ($8 - $3 > 0 || $10 - $5 > 0) {
        printf "  %-16s pid %-7s sleeps %.2f, preempted %.2f, CPU %.0f µs per request\n",
            $2, $1, ($8 - $3) / n, ($9 - $4) / n, ($10 - $5) * 1e6 / tick / n
    }'
