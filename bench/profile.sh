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
WORK=$(mktemp -d /tmp/jailgate-profile.XXXXXX)
GW_PID=
cleanup() {
    if [ -n "$GW_PID" ]; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
"$ROOT/target/release/gateway" jail init "$WORK/jail" >/dev/null 2>&1
install -m 755 "$ROOT/bench/cgi/$SCRIPT" "$WORK/jail/cgi-bin/$SCRIPT"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$ROOT/target/release/gateway" --jail "$WORK/jail" --workers 2 --listen "127.0.0.1:$PORT" \
    --access-log off >"$WORK/out" 2>"$WORK/err" </dev/null &
GW_PID=$!
until grep -q listening "$WORK/out"; do
    kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/err" >&2; exit 1; }
    sleep 0.1
done
URL="http://127.0.0.1:$PORT/cgi-bin/$SCRIPT"
wrk -t2 -c"$CONCURRENCY" -d3s "$URL" >/dev/null
perf record -e cpu-clock -F 2000 -a -g -o perf.data -- wrk -t2 -c"$CONCURRENCY" -d8s "$URL"
perf report -i perf.data --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -20
