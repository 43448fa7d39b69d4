#!/usr/bin/env bash
# A/B of two builds of Jailgate: CPU per request and req/s of one CGI, measured side by side in
# alternating rounds (this machine is shared and noisy: only ratios from one run mean anything).
#
#   bench/ab.sh OLD_BIN_DIR NEW_BIN_DIR [--script hello.sh] [--rounds 6] [--seconds 5] [--conc 16]
#               [--together]
#
# --together runs both builds at once, each under its own wrk at half the concurrency, so that
# both meet the same moments of a noisy host (alternating rounds meet different ones); the
# side that starts its wrk first alternates from round to round.
#
# Each BIN_DIR holds `gateway` and `jailgate-worker` (e.g. target/release of two worktrees).
# CPU is the user + system time of the gateway's whole process tree, CGIs included, read from a
# cgroup v1 cpuacct group per build (as bench/run.sh does); wrk is outside it. Prints one line
# per measurement and the medians. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 2 ] || { sed -n '4p' "$0" >&2; exit 2; }
declare -A BIN=([a]=$(realpath "$1") [b]=$(realpath "$2"))
shift 2
SCRIPT=hello.sh ROUNDS=6 SECONDS_EACH=5 CONC=16 TOGETHER=0
while [ $# -gt 0 ]; do
    case $1 in
        --together) TOGETHER=1; shift; continue ;;
        --script) SCRIPT=$2 ;;
        --rounds) ROUNDS=$2 ;;
        --seconds) SECONDS_EACH=$2 ;;
        --conc) CONC=$2 ;;
        *) echo "bench/ab.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
for side in a b; do
    [ -x "${BIN[$side]}/gateway" ] && [ -x "${BIN[$side]}/jailgate-worker" ] ||
        { echo "bench/ab.sh: no gateway and jailgate-worker in ${BIN[$side]}" >&2; exit 2; }
done
THREADS=$((CONC < 2 ? 1 : 2))
CPUACCT=/sys/fs/cgroup/cpuacct
[ -f "$CPUACCT/cpuacct.usage" ] || { echo "bench/ab.sh: needs cgroup v1 cpuacct" >&2; exit 2; }

WORK=$(mktemp -d /tmp/jailgate-ab.XXXXXX)
GROUP=$CPUACCT/jailgate-ab.$$
declare -A GATEWAY_PID URL
cleanup() {
    for side in a b; do
        if [ -n "${GATEWAY_PID[$side]:-}" ]; then
            kill -TERM "${GATEWAY_PID[$side]}" 2>/dev/null || true
            wait "${GATEWAY_PID[$side]}" 2>/dev/null || true
        fi
    done
    for side in a b; do
        [ -d "$GROUP/$side" ] && rmdir "$GROUP/$side" 2>/dev/null || true
    done
    [ -d "$GROUP" ] && rmdir "$GROUP" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$GROUP/a" "$GROUP/b"

# A jail per side, each built by its own side's gateway (an older audit may refuse what a newer
# `jail init` makes), the same script in each /cgi-bin.
PROGRAM=${SCRIPT%.c}
for side in a b; do
    "${BIN[$side]}/gateway" jail init "$WORK/jail.$side" >/dev/null 2>&1
    case $SCRIPT in
        *.c) gcc -O2 -static -o "$WORK/jail.$side/cgi-bin/$PROGRAM" "bench/cgi/$SCRIPT" ;;
        *) install -m 0755 "bench/cgi/$SCRIPT" "$WORK/jail.$side/cgi-bin/$PROGRAM" ;;
    esac
done

# Starts side $1's gateway in its cgroup; sets GATEWAY_PID[$1] and URL[$1].
start() {
    local side=$1 line
    rm -f "$WORK/out.$side" # else the previous start's ready line may be read before the truncation
    (echo $BASHPID >"$GROUP/$side/cgroup.procs" &&
        exec "${BIN[$side]}/gateway" --jail "$WORK/jail.$side" --workers 2 --listen 127.0.0.1:0 \
            --access-log off) >"$WORK/out.$side" 2>"$WORK/err.$side" &
    GATEWAY_PID[$side]=$!
    for _ in $(seq 100); do
        line=$(head -n1 "$WORK/out.$side" 2>/dev/null || true)
        case $line in "jailgate listening on "*) break ;; esac
        sleep 0.1
    done
    case $line in
        "jailgate listening on "*) URL[$side]="${line#jailgate listening on }/cgi-bin/$PROGRAM" ;;
        *) echo "bench/ab.sh: side $side did not start:" >&2; cat "$WORK/err.$side" >&2; exit 1 ;;
    esac
}

stop() {
    kill -TERM "${GATEWAY_PID[$1]}"
    wait "${GATEWAY_PID[$1]}" || true
    GATEWAY_PID[$1]=
}

# Records side $1's result from wrk's output $2 and its cgroup's CPU nanoseconds $3 to $4.
record() {
    local side=$1 out=$2 before=$3 after=$4 requests non2xx good cpu rps
    requests=$(awk '/requests in/ { print $1 }' <<<"$out")
    non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
    good=$((requests - ${non2xx:-0}))
    [ "$good" -gt 0 ] || { echo "bench/ab.sh: side $side answered nothing" >&2; exit 1; }
    cpu=$(((after - before) / 1000 / good))
    rps=$((good / SECONDS_EACH))
    CPU_US[$side]+="$cpu "
    RPS[$side]+="$rps "
    printf '%s\t%s\t%s\t%s\n' "$round" "$side" "$rps" "$cpu"
}

declare -A CPU_US RPS BEFORE AFTER
HALF=$(((CONC + 1) / 2)) # each side's load with --together
HALF_THREADS=$((HALF < 2 ? 1 : 2))
printf 'round\tside\treq/s\tCPU µs/req\n'
for round in $(seq "$ROUNDS"); do
    if [ "$TOGETHER" = 1 ]; then
        order=$([ $((round % 2)) = 1 ] && echo "a b" || echo "b a")
        for side in $order; do start "$side"; done
        loads=() # wrk's pids: a bare `wait` would wait for the gateways too
        for side in $order; do
            wrk -t"$HALF_THREADS" -c"$HALF" -d1s "${URL[$side]}" >/dev/null &
            loads+=($!)
        done
        wait "${loads[@]}"
        for side in $order; do read -r "BEFORE[$side]" <"$GROUP/$side/cpuacct.usage"; done
        loads=()
        for side in $order; do
            wrk -t"$HALF_THREADS" -c"$HALF" -d"${SECONDS_EACH}s" "${URL[$side]}" >"$WORK/wrk.$side" &
            loads+=($!)
        done
        wait "${loads[@]}"
        for side in $order; do read -r "AFTER[$side]" <"$GROUP/$side/cpuacct.usage"; done
        for side in $order; do stop "$side"; done
        for side in a b; do
            record "$side" "$(cat "$WORK/wrk.$side")" "${BEFORE[$side]}" "${AFTER[$side]}"
        done
        continue
    fi
    for side in a b; do
        start "$side"
        wrk -t"$THREADS" -c"$CONC" -d1s "${URL[$side]}" >/dev/null # warm up: workers, caches, namespaces
        read -r before <"$GROUP/$side/cpuacct.usage"
        out=$(wrk -t"$THREADS" -c"$CONC" -d"${SECONDS_EACH}s" "${URL[$side]}")
        read -r after <"$GROUP/$side/cpuacct.usage"
        stop "$side"
        record "$side" "$out" "$before" "$after"
    done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
a_cpu=$(median "${CPU_US[a]}") b_cpu=$(median "${CPU_US[b]}")
a_rps=$(median "${RPS[a]}") b_rps=$(median "${RPS[b]}")
echo "medians: a ${BIN[a]}: $a_rps req/s, $a_cpu µs/req; b ${BIN[b]}: $b_rps req/s, $b_cpu µs/req"
awk -v a="$a_cpu" -v b="$b_cpu" -v ra="$a_rps" -v rb="$b_rps" \
    'BEGIN { printf "b/a: CPU per request %.3f, req/s %.3f\n", b / a, rb / ra }'
