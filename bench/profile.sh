#!/usr/bin/env bash
# Profiles one case the way bench/MISSES.md was measured: a release gateway (its default
# --workers, access log off) on a fresh classic jail holding bench/cgi/SCRIPT, wrk at
# CONCURRENCY for 3 s to warm up, then `perf record -e cpu-clock -a -g` for 8 s of wrk; then
# the same for the spawn ceiling (bench/spawn_ceiling.c, the script outside any jail). For
# each it prints the machine's CPU per request by process and library, in µs: on one vCPU at
# c=1 the p50 is the sum of these, so the two tables side by side show where a gap over the
# ceiling goes. Needs root, perf, wrk and gcc; loopback only; everything it starts is stopped
# by its pid and its temporary folder removed.
#
#   bench/profile.sh [SCRIPT] [CONCURRENCY]
#       (default: hello.sh 16; perf.data and perf-ceiling.data are kept in .)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRIPT=${1:-hello.sh}
CONCURRENCY=${2:-16}
SECONDS_EACH=8
[ "$(id -u)" = 0 ] || { echo "profile.sh: run as root" >&2; exit 2; }
for tool in perf wrk gcc; do
    command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing" >&2; exit 2; }
done
[ -f "$ROOT/bench/cgi/$SCRIPT" ] || { echo "profile.sh: no bench/cgi/$SCRIPT" >&2; exit 2; }
case $SCRIPT in *.c) echo "profile.sh: give a script, not a C source" >&2; exit 2 ;; esac
cargo build --release --workspace --bins --manifest-path "$ROOT/Cargo.toml" >&2
# shellcheck source=bench/one_gateway.sh
. "$ROOT/bench/one_gateway.sh"
start_one_gateway "$ROOT/target/release" "$SCRIPT" "" profile
THREADS=$((CONCURRENCY < 2 ? 1 : 2))

# per_request DATA REQUESTS: the samples of DATA by process and library, as µs of CPU per
# request (the samples cover every core for SECONDS_EACH; idle shows as swapper).
per_request() {
    perf report -i "$1" --no-children --sort comm,dso --stdio -g none 2>/dev/null |
        awk -v cores="$(nproc)" -v secs="$SECONDS_EACH" -v requests="$2" '
            $1 ~ /%$/ && $2 != "swapper" {
                share = substr($1, 1, length($1) - 1) / 100
                us = share * cores * secs * 1e6 / requests
                if (us >= 1) printf "  %7.0f µs  %s %s\n", us, $2, $3
            }'
}

wrk -t"$THREADS" -c"$CONCURRENCY" -d3s "$URL" >/dev/null
out=$(perf record -e cpu-clock -F 2000 -a -g -o perf.data -- \
    wrk -t"$THREADS" -c"$CONCURRENCY" -d"${SECONDS_EACH}s" --latency "$URL" 2>/dev/null)
requests=$(awk '/requests in/ { print $1 }' <<<"$out")
echo "Jailgate, $SCRIPT at c=$CONCURRENCY under perf: $requests requests in ${SECONDS_EACH} s, p50 $(awk '$1 == "50%" { print $2 }' <<<"$out")"
per_request perf.data "$requests"

mkdir -p "$WORK/www"
gcc -O2 -o "$WORK/spawn_ceiling" "$ROOT/bench/spawn_ceiling.c"
install -m 755 "$ROOT/bench/cgi/$SCRIPT" "$WORK/www/$SCRIPT"
"$WORK/spawn_ceiling" -c "$CONCURRENCY" -d 3 "$WORK/www/$SCRIPT" >/dev/null
out=$(perf record -e cpu-clock -F 2000 -a -g -o perf-ceiling.data -- \
    "$WORK/spawn_ceiling" -c "$CONCURRENCY" -d "$SECONDS_EACH" "$WORK/www/$SCRIPT" 2>/dev/null)
# spawn_ceiling prints KEY=VALUE pairs on one line.
field() { tr ' ' '\n' <<<"$out" | sed -n "s/^$1=//p"; }
requests=$(field requests)
echo "spawn ceiling, the same: $requests requests in ${SECONDS_EACH} s, p50 $(field p50_ms) ms"
per_request perf-ceiling.data "$requests"
