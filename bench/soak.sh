#!/usr/bin/env bash
# Soak: a mixed workload (hello, 64 KiB POST echo, 1 MiB output, slow CGIs, failing CGIs,
# missing scripts, CGIs that leave a process running) against one gateway for SECONDS, then a
# report: requests by outcome (from the gateway's own /metrics), the front's RSS and open
# descriptors and the workers' open descriptors before and after, zombies, processes of the
# CGI ids still running once the load is over, and what is left after the stop. Exits 1 on any leak
# or unexplained error, so CI can run a short one.
#
#   bench/soak.sh [SECONDS] [--bin-dir DIR]     (default 600 s, target/release)
#
# Run as root on Debian (it installs wrk if missing). Loopback only; every process it starts
# is stopped by its pid; its temporary folder is removed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
bin_dir=target/release
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    [0-9]*) seconds="$1"; shift ;;
    *) echo "usage: bench/soak.sh [SECONDS] [--bin-dir DIR]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench/soak.sh: run as root" >&2; exit 2; }
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
if [ ! -x "$bin_dir/gateway" ]; then
  cargo build --release --workspace --bins --locked
fi
gateway_bin="$(realpath "$bin_dir/gateway")"

work="$(mktemp -d /tmp/jailgate-soak.XXXXXX)"
gw=""
cleanup() {
  if [ -n "$gw" ] && kill -0 "$gw" 2>/dev/null; then
    kill -TERM "$gw" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$gw" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$gw" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$gateway_bin" jail init "$work/jail" >/dev/null 2>&1
cgi() { printf '#!/bin/sh\n%s\n' "$2" > "$work/jail/cgi-bin/$1"; chmod 755 "$work/jail/cgi-bin/$1"; }
cgi hello 'printf "Content-Type: text/plain\n\nhello\n"'
cgi echo 'printf "Content-Type: application/octet-stream\n\n"; exec cat'
cgi big 'printf "Content-Type: application/octet-stream\n\n"; exec head -c 1048576 /dev/zero'
cgi slow 'sleep 0.2; printf "Content-Type: text/plain\n\nslept\n"'
cgi fail 'echo "failing on purpose" >&2; exit 1'
# A background job that outlives its request unless the worker kills it (worker/src/kill.rs).
cgi leaver '( sleep 30 </dev/null >/dev/null 2>&1 & ); printf "Content-Type: text/plain\n\nleft one behind\n"'

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
admin="$(free_port)"
"$gateway_bin" --jail "$work/jail" --workers 2 --listen "127.0.0.1:$port" \
  --admin "127.0.0.1:$admin" --access-log off --timeout 10 \
  > "$work/stdout" 2> "$work/stderr" &
gw=$!
for _ in $(seq 200); do grep -q listening "$work/stdout" 2>/dev/null && break; sleep 0.05; done
grep -q listening "$work/stdout" || { echo "soak: the gateway did not start:"; cat "$work/stderr"; exit 1; }

# The front is the gateway's child that runs the gateway binary (forked, not exec'd), whatever
# its account (--gateway-user).
front() { ps -o pid=,comm= --ppid "$gw" | awk '$2 == "gateway" {print $1}'; }
# The holders are the gateway's jailgate-worker children; each worker proper is a holder's child.
workers() {
  local holder
  for holder in $(ps -o pid=,comm= --ppid "$gw" | awk '$2 == "jailgate-worker" {print $1}'); do
    echo "$holder"; ps -o pid= --ppid "$holder"
  done
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
# A worker keeps the mount namespaces of ended CGIs for later ones (worker/src/private_tmp.rs):
# two descriptors each (the namespace, its /tmp), as many as CGIs ran at once, at most
# MAX_NAMESPACES. They are counted apart: the pool grows with the load's concurrency, a leak
# with the number of requests.
namespaces() { find "/proc/$1/fd" -lname 'mnt:*' 2>/dev/null | wc -l; }
worker_fds() {
  local total=0 pid
  for pid in $(workers); do total=$((total + $(fds "$pid") - 2 * $(namespaces "$pid"))); done
  echo "$total"
}
worker_namespaces() {
  local most=0 pid n
  for pid in $(workers); do n=$(namespaces "$pid"); [ "$n" -le "$most" ] || most=$n; done
  echo "$most"
}
MAX_NAMESPACES=64
metric() { curl -s "http://127.0.0.1:$admin/metrics" | awk -v key="$1" '$1 == key {print $2}' | tail -1; }
status_count() { local v; v="$(metric "jailgate_requests_total{front=\"http\",status=\"$1\"}")"; echo "${v:-0}"; }

# Warm up, then take the baseline at idle.
wrk -t1 -c4 -d2s -s bench/soak.lua "http://127.0.0.1:$port" > /dev/null
sleep 1
front_pid="$(front)"
rss_before="$(rss_kb "$front_pid")"; fds_before="$(fds "$front_pid")"; wfds_before="$(worker_fds)"
ok_before="$(status_count 200)"; nf_before="$(status_count 404)"; bad_before="$(status_count 502)"

echo "soak: ${seconds} s of mixed load on 127.0.0.1:$port (front pid $front_pid)"
wrk -t2 -c16 -d"${seconds}s" --timeout 15s -s bench/soak.lua "http://127.0.0.1:$port" > "$work/wrk" &
load=$!
# The front's RSS along the way: a leak climbs, an allocator settling levels off.
rss_series=""
interval=$(( seconds >= 120 ? 60 : 10 ))
while kill -0 "$load" 2>/dev/null; do
  for _ in $(seq "$interval"); do kill -0 "$load" 2>/dev/null || break; sleep 1; done
  kill -0 "$load" 2>/dev/null && rss_series="$rss_series $(rss_kb "$front_pid")"
done
wait "$load" || true
sleep 2   # connections close, the last CGIs exit

rss_after="$(rss_kb "$front_pid")"; fds_after="$(fds "$front_pid")"; wfds_after="$(worker_fds)"
kept_after="$(worker_namespaces)"
ok=$(( $(status_count 200) - ok_before )); not_found=$(( $(status_count 404) - nf_before ))
failed=$(( $(status_count 502) - bad_before ))
all="$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^jailgate_requests_total/ {sum += $2} END {print sum + 0}')"
other=$(( all - $(status_count 200) - $(status_count 404) - $(status_count 502) ))
others="$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^jailgate_requests_total/ && !/status="(200|404|499|502)"/ {printf "%s %s; ", $1, $2}')"
# 499: wrk closes its connections when its time is up, requests in flight included.
closed_early="$(status_count 499)"
other=$(( other - closed_early ))
socket_errors="$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk")"
socket_errors="${socket_errors:-0}"
sent="$(awk '/requests in/ {print $1}' "$work/wrk")"
# Every CGI runs as one of the default --cgi-ids; once the load is over none may still run (a
# leaver's job outlives its request only until its worker's next sweep).
cgi_left="$(ps -eo uid= | awk '$1 >= 1879048192 && $1 <= 1880096767' | wc -l)"
zombies="$(ps -eo stat=,ppid= | awk -v gw="$gw" -v front="$front_pid" '$1 ~ /^Z/ && ($2 == gw || $2 == front)' | wc -l)"
restarts="$(metric jailgate_worker_restarts_total)"

# Stop, and look for anything left of the gateway's tree.
tree_before_stop="$(ps -eo pid=,ppid= | awk -v gw="$gw" 'BEGIN {keep[gw]=1} {parent[$1]=$2} END {changed=1; while (changed) {changed=0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) {keep[p]=1; changed=1}} for (p in keep) print p}')"
kill -TERM "$gw"
status=0; wait "$gw" || status=$?
gw=""
sleep 1
left=0
for pid in $tree_before_stop; do
  if [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then left=$((left + 1)); fi
done

cat <<EOF

| measure | before | after |
|---|---:|---:|
| front RSS (KiB) | $rss_before | $rss_after |
| front open descriptors | $fds_before | $fds_after |
| workers' open descriptors, their kept namespaces apart | $wfds_before | $wfds_after |
| most namespaces one worker keeps (at most $MAX_NAMESPACES) | | $kept_after |

| outcome | requests |
|---|---:|
| sent by wrk | ${sent:-0} |
| 200 (hello, echo, big, slow, leaver) | $ok |
| 404 (missing script, expected) | $not_found |
| 502 (failing CGI, expected) | $failed |
| 499 (in flight when wrk stopped; at most one per connection) | $closed_early |
| any other status | $other ${others:+($others)} |
| socket errors (connect, read, write, timeout) | $socket_errors |

front RSS every ${interval} s under load (KiB):${rss_series:- none}

worker restarts: ${restarts:-0}; zombies of the gateway: $zombies; processes of CGI ids 2 s after the load: $cgi_left; exit status after SIGTERM: $status; processes left after the stop: $left
EOF

problems=()
[ "$other" -eq 0 ] || problems+=("$other requests with an unexpected status")
[ "$closed_early" -le 20 ] || problems+=("$closed_early requests abandoned by their client (wrk only abandons those in flight at its end)")
[ "$socket_errors" -eq 0 ] || problems+=("$socket_errors socket errors")
[ "${restarts:-0}" = 0 ] || problems+=("workers restarted ${restarts} times")
[ "$zombies" -eq 0 ] || problems+=("$zombies zombies")
[ "$cgi_left" -eq 0 ] || problems+=("$cgi_left processes of CGI ids still running after the load")
[ "$status" -eq 0 ] || problems+=("exit status $status after SIGTERM")
[ "$left" -eq 0 ] || problems+=("$left processes left after the stop")
[ "$fds_after" -le $((fds_before + 2)) ] || problems+=("front descriptors grew from $fds_before to $fds_after")
[ "$wfds_after" -le $((wfds_before + 2)) ] || problems+=("worker descriptors grew from $wfds_before to $wfds_after")
[ "$kept_after" -le "$MAX_NAMESPACES" ] || problems+=("a worker keeps $kept_after namespaces, more than $MAX_NAMESPACES")
# Allocator arenas settle in the first minutes; more than half again plus 4 MiB is a leak.
[ "$rss_after" -le $((rss_before * 3 / 2 + 4096)) ] || problems+=("front RSS grew from $rss_before to $rss_after KiB")
[ "$ok" -gt 0 ] && [ "$failed" -gt 0 ] && [ "$not_found" -gt 0 ] || problems+=("the workload did not run as planned")
if [ ${#problems[@]} -gt 0 ]; then
  printf 'soak FAILED: %s\n' "${problems[@]}"
  exit 1
fi
echo "soak passed"
