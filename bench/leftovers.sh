#!/usr/bin/env bash
# What CGIs that leave processes behind cost the requests beside them: a release gateway
# (--workers 2, access log off) on a fresh classic jail, hello.sh at c=8 for SECONDS in two
# cases, each printed on a line of its own:
#   1. beside tests/e2e/attacks/setsid_escape.c at c=8 (each of its requests leaves a
#      grandchild outside the CGI's process group, killed when the CGI ends), with EXTRA idle
#      processes on the host (bench/hold_processes.c): what the worker does to find and kill
#      what a CGI left must not grow with the host's processes;
#   2. while 4 requests of bench/cgi/orphans.sh each keep 60 orphans running (children of the
#      worker, of running CGIs): they must not make every other CGI's end dearer.
# Needs root, wrk and cc with static glibc; loopback only; everything it starts is stopped by
# its pid and the temporary folder removed.
#
#   bench/leftovers.sh [EXTRA] [SECONDS] [--bin-dir DIR]   (default: 10000 5, target/release,
#                                                           built if missing)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/one_gateway.sh
. "$ROOT/bench/one_gateway.sh"
parse_bench_args 15 "$@"
EXTRA=${ARGS[0]:-10000}
SECONDS_EACH=${ARGS[1]:-5}
[ "$(id -u)" = 0 ] || { echo "leftovers.sh: run as root" >&2; exit 2; }
for tool in wrk cc; do
    command -v "$tool" >/dev/null || { echo "leftovers.sh: $tool is missing" >&2; exit 2; }
done
if [ ! -x "$BIN/gateway" ]; then
    cargo build --release --workspace --bins --manifest-path "$ROOT/Cargo.toml" >&2
fi
start_one_gateway "$BIN" hello.sh 2 leftovers
HOLDER=
stop_all() {
    if [ -n "$HOLDER" ]; then kill "$HOLDER" 2>/dev/null || true; wait "$HOLDER" 2>/dev/null || true; fi
    stop_one_gateway
}
trap stop_all EXIT
cc -O1 -static -o "$WORK/jail/cgi-bin/escapee" "$ROOT/tests/e2e/attacks/setsid_escape.c"
cc -O2 -o "$WORK/hold_processes" "$ROOT/bench/hold_processes.c"
if [ "$EXTRA" -gt 0 ]; then
    "$WORK/hold_processes" "$EXTRA" $((SECONDS_EACH + 120)) >"$WORK/held" &
    HOLDER=$!
    until grep -q '^held' "$WORK/held"; do
        kill -0 "$HOLDER" 2>/dev/null || { echo "leftovers.sh: hold_processes failed" >&2; exit 1; }
        sleep 0.2
    done
fi
ESCAPEE=${URL%/hello.sh}/escapee
curl -sf --max-time 5 "$ESCAPEE" | grep -q '^done$' || { echo "leftovers.sh: the escapee does not answer" >&2; exit 1; }
wrk -t1 -c8 -d1s "$URL" >/dev/null
wrk -t1 -c8 -d"${SECONDS_EACH}s" "$ESCAPEE" >"$WORK/escapee.txt" &
LEAVING=$!
wrk --latency -t1 -c8 -d"${SECONDS_EACH}s" "$URL" >"$WORK/hello.txt"
wait "$LEAVING"
rate() { awk '/Requests\/sec/ { r = $2 } /Non-2xx|Socket errors/ { e = e " [" $0 "]" } END { print r e }' "$1"; }
p50() { awk '$1 == "50%" { print $2 }' "$1"; }
printf '%s processes on the host, %s: hello.sh %s req/s (p50 %s) beside the escapee %s req/s\n' \
    "$(ps -e --no-headers | wc -l)" "$BIN" "$(rate "$WORK/hello.txt")" "$(p50 "$WORK/hello.txt")" \
    "$(rate "$WORK/escapee.txt")"
if [ -n "$HOLDER" ]; then kill "$HOLDER"; wait "$HOLDER" || true; HOLDER=; fi

install -m 755 "$ROOT/bench/cgi/orphans.sh" "$WORK/jail/cgi-bin/orphans.sh"
KEEPERS=()
for keeper in 1 2 3 4; do
    curl -s --max-time 30 -N "${URL%/hello.sh}/orphans.sh" >"$WORK/keeper$keeper" &
    KEEPERS+=($!)
done
until [ "$(cat "$WORK"/keeper? | grep -c '^held$')" = 4 ]; do
    for keeper in "${KEEPERS[@]}"; do
        kill -0 "$keeper" 2>/dev/null || { echo "leftovers.sh: orphans.sh did not answer" >&2; exit 1; }
    done
    sleep 0.2
done
wrk --latency -t1 -c8 -d"${SECONDS_EACH}s" "$URL" >"$WORK/hello.txt"
printf '%s orphans of running CGIs, %s: hello.sh %s req/s (p50 %s)\n' \
    "$(pgrep -c -x sleep)" "$BIN" "$(rate "$WORK/hello.txt")" "$(p50 "$WORK/hello.txt")"
kill "${KEEPERS[@]}" 2>/dev/null || true
wait "${KEEPERS[@]}" 2>/dev/null || true
