#!/usr/bin/env bash
# Profiles one case the way bench/MISSES.md was measured: a release gateway (--workers 2,
# access log off) on a fresh classic jail holding bench/cgi/SCRIPT, wrk at CONCURRENCY for
# 3 s to warm up, then `perf record -e cpu-clock -a -g` for 8 s of wrk, and a summary by
# process and library. Needs root, perf and wrk; loopback only; everything it starts is
# stopped by its pid and its temporary folder removed.
#
#   bench/profile.sh [SCRIPT] [CONCURRENCY]     (default: hello.sh 16; perf.data is kept in .)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRIPT=${1:-hello.sh}
CONCURRENCY=${2:-16}
[ "$(id -u)" = 0 ] || { echo "profile.sh: run as root" >&2; exit 2; }
for tool in perf wrk; do
    command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing" >&2; exit 2; }
done
[ -f "$ROOT/bench/cgi/$SCRIPT" ] || { echo "profile.sh: no bench/cgi/$SCRIPT" >&2; exit 2; }
cargo build --release --workspace --bins --manifest-path "$ROOT/Cargo.toml" >&2
# shellcheck source=bench/one_gateway.sh
. "$ROOT/bench/one_gateway.sh"
start_one_gateway "$ROOT/target/release" "$SCRIPT" 2 profile
wrk -t2 -c"$CONCURRENCY" -d3s "$URL" >/dev/null
perf record -e cpu-clock -F 2000 -a -g -o perf.data -- wrk -t2 -c"$CONCURRENCY" -d8s "$URL"
perf report -i perf.data --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -20
