# shellcheck shell=bash
# Sourced by bench/profile.sh, bench/sleeps.sh and bench/leftovers.sh: one release gateway on a
# fresh classic jail holding bench/cgi/SCRIPT, on a free loopback port, with its access log off.
#
#   start_one_gateway BIN_DIR SCRIPT WORKERS NAME     (WORKERS empty: the gateway's default)
#
# Sets WORK (a temporary folder, /tmp/jailgate-NAME.*), GW_PID (the supervisor) and URL (the
# script's), and traps EXIT to stop the gateway by its pid and remove the folder. Exits if the
# gateway does not start, with what it printed.

# parse_bench_args HELP_END ARGS...: sets BIN (target/release, or the folder of --bin-dir DIR)
# and ARGS (the other arguments); -h or --help prints the calling script's header (lines 2 to
# HELP_END) and exits.
# shellcheck disable=SC2034 # BIN and ARGS are read by the script that sources this one
parse_bench_args() {
    local help_end=$1 root
    shift
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    BIN=$root/target/release
    ARGS=()
    while [ $# -gt 0 ]; do
        case $1 in
        --bin-dir) BIN=$(cd "$2" && pwd); shift 2 ;;
        -h | --help) sed -n "2,${help_end}p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
        esac
    done
}

start_one_gateway() {
    local bin=$1 script=$2 workers=$3 name=$4 root port
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    WORK=$(mktemp -d "/tmp/jailgate-$name.XXXXXX")
    GW_PID=
    trap stop_one_gateway EXIT
    "$bin/gateway" jail init "$WORK/jail" >/dev/null 2>&1
    install -m 755 "$root/bench/cgi/$script" "$WORK/jail/cgi-bin/$script"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$bin/gateway" --jail "$WORK/jail" ${workers:+--workers "$workers"} --listen "127.0.0.1:$port" \
        --access-log off >"$WORK/out" 2>"$WORK/err" </dev/null &
    GW_PID=$!
    until grep -q listening "$WORK/out"; do
        kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/err" >&2; exit 1; }
        sleep 0.1
    done
    # shellcheck disable=SC2034 # read by the script that sources this one
    URL="http://127.0.0.1:$port/cgi-bin/$script"
}

stop_one_gateway() {
    if [ -n "${GW_PID:-}" ]; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
