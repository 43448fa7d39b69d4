#!/usr/bin/env bash
# Jailgate side by side with what people run instead (issue 6), on this machine, in one run.
#
#   bench/run.sh             full run: 3 interleaved rounds (about 20 minutes on 2 cores)
#   bench/run.sh --quick     smoke run: 1 round, 3 s per measurement, fewer cases (~3 minutes)
#   bench/run.sh --no-build  use the binaries already in target/release (with either of the above)
#
# As root on Debian: installs what it lacks with apt (wrk, nginx, fcgiwrap, spawn-fcgi, lighttpd,
# gnuplot, gcc, curl), builds the release binaries, and measures, round-robin over the setups
# in every round, each CGI under: the spawn ceiling (bench/spawn_ceiling.c: posix_spawn, no
# HTTP), Jailgate direct, nginx proxy_pass -> Jailgate, nginx fastcgi_pass -> Jailgate's FastCGI
# front, nginx + fcgiwrap (16 preforked by spawn-fcgi) and lighttpd mod_cgi. Writes
# bench/RESULTS.md, bench/results.png (by bench/report.py) and bench/results.tsv (one row per
# measurement). BENCH_ROUNDS and BENCH_SECONDS override the number of rounds and the seconds
# per measurement; BENCH_RAW=DIR also keeps the raw tables there (report.py DIR ... redraws).
#
# Everything listens on 127.0.0.1 only; every process started here is stopped by its pid, and
# the temporary folder is removed on exit.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
QUICK=0
BUILD=1
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (the gateway must start as root)" >&2; exit 2; }

# --- what is measured --------------------------------------------------------------------------
# A case is SCRIPT:CONCURRENCY. Cases run in this order in every round, and every case runs on
# every setup before the next case starts (the setup order rotates from round to round).
if [ "$QUICK" = 1 ]; then
    ROUNDS=${BENCH_ROUNDS:-1}
    SECONDS_PER_RUN=${BENCH_SECONDS:-3}
    SLEEP_SECONDS=5
    CASES=(hello.sh:1 hello.sh:16 hello.sh:64 hello-busybox.sh:16 hello-static:16 out1m.sh:16
        echo.sh:1 sleep1.sh:1000)
else
    ROUNDS=${BENCH_ROUNDS:-3}
    SECONDS_PER_RUN=${BENCH_SECONDS:-4}
    SLEEP_SECONDS=10
    CASES=(hello.sh:1 hello.sh:16 hello.sh:64 hello-busybox.sh:1 hello-busybox.sh:16
        hello-busybox.sh:64 hello-static:1 hello-static:16 hello-static:64 out1m.sh:16
        echo.sh:1 sleep1.sh:1000)
fi
SETUPS=(ceiling jg-direct jg-proxy jg-fcgi nginx-fcgiwrap lighttpd)
WORKERS=4            # gateway --workers: its default on the 2-core reference machine (two per core)
FCGIWRAP_CHILDREN=16 # the issue's anchor: 16 preforked fcgiwrap processes
ECHO_BYTES=$((64 * 1024 * 1024))
WEDGE_SECONDS=10     # a POST echo with no answer after this long counts as wedged
ANCHOR_USER=www-data # nginx, fcgiwrap and lighttpd run as Debian's web user; Jailgate as ids of its own
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
START_EPOCH=$EPOCHSECONDS

# --- what it needs ------------------------------------------------------------------------------
install_missing() {
    local want=() need
    for need in wrk:wrk nginx:nginx fcgiwrap:fcgiwrap spawn-fcgi:spawn-fcgi lighttpd:lighttpd \
        gnuplot:gnuplot-nox gcc:gcc curl:curl git:git; do
        [ -x "$(PATH=$CLEAN_PATH command -v "${need%%:*}" || true)" ] || want+=("${need#*:}")
    done
    [ -f /usr/include/stdio.h ] && [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || want+=(libc6-dev)
    [ -x /usr/bin/python3 ] || want+=(python3)
    [ -f /etc/nginx/fastcgi_params ] || want+=(nginx)
    [ -x /bin/busybox ] || want+=(busybox-static)
    if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null || want+=(cargo)
    if [ ${#want[@]} -gt 0 ]; then
        log "installing ${want[*]}"
        apt-get update -qq || true
        # A package whose service fails to start (nginx and lighttpd both want port 80) may make
        # apt-get fail although the programs are installed: what counts is the check below.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null ||
            log "apt-get install reported an error; going on if the programs are there"
    fi
    for need in wrk nginx fcgiwrap spawn-fcgi lighttpd gcc curl cargo; do
        PATH=$PATH:$CLEAN_PATH command -v "$need" >/dev/null || die "$need is missing and could not be installed"
    done
    [ -x /bin/busybox ] && [ -x /usr/bin/python3 ] && [ -f /etc/nginx/fastcgi_params ] ||
        die "busybox, python3 or nginx's fastcgi_params is missing"
}
install_missing

if [ "$BUILD" = 1 ]; then
    log "building the release binaries"
    (cd "$ROOT" && cargo build --release --workspace --bins --locked)
fi
GATEWAY=$ROOT/target/release/gateway
[ -x "$GATEWAY" ] && [ -x "$ROOT/target/release/jailgate-worker" ] || die "no release binaries in $ROOT/target/release"

# --- the temporary world, and its teardown ------------------------------------------------------
WORK=$(mktemp -d /tmp/jailgate-bench.XXXXXX)
chmod 755 "$WORK" # the anchors' CGIs run as $ANCHOR_USER and must reach $WORK/www
STARTED=()        # pids of the servers started here, stopped in reverse order at exit
FCGIWRAP_PIDS=()  # spawn-fcgi's children (spawn-fcgi itself exits)
CG_KIND=none      # v2 | v1 | none: how CPU time per setup is read (see cg_init)
CG_DIR=
CPU_CG=           # the cgroup v1 cpu group that schedules the whole benchmark (see cpu_group_init)

alive() { # a pid that exists and is not a zombie
    [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
stop_pid() { # TERM, up to 5 s, then KILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local status=$? i pid cg
    trap - EXIT INT TERM
    log "stopping everything"
    for pid in "${FCGIWRAP_PIDS[@]}"; do stop_pid "$pid"; done
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_pid "${STARTED[i]}"; done
    if [ -n "$CPU_CG" ] && [ -d "$CPU_CG" ]; then
        echo $$ >"${CPU_CG%/*}/cgroup.procs" 2>/dev/null || true
        while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$CPU_CG/cgroup.procs"
        for ((i = 0; i < 50; i++)); do rmdir "$CPU_CG" 2>/dev/null && break; sleep 0.1; done
    fi
    if [ -n "$CG_DIR" ] && [ -d "$CG_DIR" ]; then
        # Whatever is still in one of our cgroups (a CGI outliving its server) is ours: stop it by pid.
        for cg in "$CG_DIR"/*/; do
            [ -f "$cg/cgroup.procs" ] || continue
            while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$cg/cgroup.procs"
        done
        for ((i = 0; i < 50; i++)); do
            for cg in "$CG_DIR"/*/; do [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true; done
            rmdir "$CG_DIR" 2>/dev/null && break
            sleep 0.1
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU time per setup: each server runs in a cgroup of its own (with all its children, CGIs
# included), so a measurement's CPU is exact even on a machine shared with builds. Without a
# usable cgroup the column falls back to the whole machine's busy time.
cg_init() {
    local root=
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        root=/sys/fs/cgroup CG_KIND=v2
    elif [ -f /sys/fs/cgroup/unified/cgroup.procs ]; then
        root=/sys/fs/cgroup/unified CG_KIND=v2
    elif [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
        root=/sys/fs/cgroup/cpuacct CG_KIND=v1
    else
        return 0
    fi
    CG_DIR=$root/jailgate-bench.$$
    local name
    if mkdir "$CG_DIR" 2>/dev/null; then
        for name in ceiling gateway nginx fcgiwrap lighttpd client; do
            mkdir "$CG_DIR/$name" 2>/dev/null || { CG_KIND=none; return 0; }
        done
        if [ "$CG_KIND" = v2 ] && [ ! -f "$CG_DIR/ceiling/cpu.stat" ]; then CG_KIND=none; fi
    else
        CG_DIR= CG_KIND=none
    fi
}
# Scheduling: with the scheduler's autogroups (on by default in Debian's kernels) every session
# is a scheduling group of its own, so a server that puts each CGI in a new session (Jailgate)
# gets a share of the CPU per running CGI, while one that keeps its CGIs in its own session
# (lighttpd, the spawn ceiling) gets one share in all: on a machine shared with builds that
# decides more than the servers' own costs. Autogroups apply only to the root cpu cgroup, so
# the whole benchmark, this script and everything it starts, runs in one cpu cgroup of its own:
# inside it every process is scheduled alike, as under a service manager's cgroup, and the
# benchmark as a whole competes for the cores as one group.
cpu_group_init() {
    CPU_MODE="autogroups (no cpu cgroup)"
    if [ -f /sys/fs/cgroup/cpu/cpu.shares ] && [ -f /sys/fs/cgroup/cpu/cgroup.procs ]; then
        CPU_CG=/sys/fs/cgroup/cpu/jailgate-bench.$$
        if mkdir "$CPU_CG" 2>/dev/null && echo $$ >"$CPU_CG/cgroup.procs" 2>/dev/null; then
            CPU_MODE="one cgroup v1 cpu group"
        else
            rmdir "$CPU_CG" 2>/dev/null || true
            CPU_CG=
        fi
    elif [ "$CG_KIND" = v2 ] && [ "${CG_DIR%/*}" = /sys/fs/cgroup ] &&
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
        CPU_MODE="one cgroup v2 cpu group (the servers, the ceiling and wrk)"
    fi
}
cg_enter() { # move this (sub)shell into cgroup $1 before it execs a server
    [ "$CG_KIND" = none ] || echo "$BASHPID" >"$CG_DIR/$1/cgroup.procs"
}
cg_usage_us() { # CPU microseconds used so far by the processes of cgroup $1
    local key value
    case $CG_KIND in
    v2) while read -r key value; do [ "$key" = usage_usec ] && { echo "$value"; return; }; done <"$CG_DIR/$1/cpu.stat" ;;
    v1) read -r value <"$CG_DIR/$1/cpuacct.usage"; echo $((value / 1000)) ;;
    *) echo 0 ;;
    esac
}
cg_count() { # processes in cgroup $1
    [ "$CG_KIND" = none ] && { echo 0; return; }
    local n=0 pid
    while read -r pid; do n=$((n + 1)); done <"$CG_DIR/$1/cgroup.procs"
    echo "$n"
}
CLK_TCK=$(getconf CLK_TCK)
machine_busy_us() { # busy CPU time of the whole machine, all cores, from /proc/stat
    local cpu user nice system idle iowait irq softirq steal rest
    read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
    echo $(((user + nice + system + irq + softirq + steal) * 1000000 / CLK_TCK))
}
setup_cgroups() { # the cgroups whose CPU counts for a setup
    case $1 in
    ceiling) echo ceiling ;;
    jg-direct) echo gateway ;;
    jg-proxy | jg-fcgi) echo gateway nginx ;;
    nginx-fcgiwrap) echo nginx fcgiwrap ;;
    lighttpd) echo lighttpd ;;
    esac
}
setup_usage_us() {
    [ "$CG_KIND" = none ] && { machine_busy_us; return; }
    local total=0 cg
    for cg in $(setup_cgroups "$1"); do total=$((total + $(cg_usage_us "$cg"))); done
    echo "$total"
}

NEXT_PORT=$((20000 + RANDOM % 20000))
take_port() { # sets the variable named $1 to a loopback port nobody listens on
    while (exec 3<>"/dev/tcp/127.0.0.1/$NEXT_PORT") 2>/dev/null; do NEXT_PORT=$((NEXT_PORT + 1)); done
    printf -v "$1" %s "$NEXT_PORT"
    NEXT_PORT=$((NEXT_PORT + 1))
}
wait_port() { # port, seconds
    local end=$((EPOCHSECONDS + $2))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        [ "$EPOCHSECONDS" -lt "$end" ] || return 1
        sleep 0.05
    done
}

# --- scripts, jail, helpers ---------------------------------------------------------------------
log "work folder $WORK"
ulimit -n "$(ulimit -Hn)" # wrk and the servers hold 1,000 connections (and their CGIs' pipes)
cg_init
cpu_group_init
mkdir -p "$WORK/www/cgi-bin" "$WORK/bin"
gcc -O2 -Wall -o "$WORK/bin/spawn_ceiling" "$BENCH/spawn_ceiling.c"
gcc -O2 -static -o "$WORK/www/cgi-bin/hello-static" "$BENCH/cgi/hello-static.c"
for script in hello.sh hello-busybox.sh out1m.sh echo.sh sleep1.sh; do
    install -m 755 "$BENCH/cgi/$script" "$WORK/www/cgi-bin/$script"
done
chmod 755 "$WORK/www/cgi-bin/hello-static"
CEILING=$WORK/bin/spawn_ceiling
head -c "$ECHO_BYTES" /dev/urandom >"$WORK/body"
chmod 644 "$WORK/body"

# The jail: the classic profile (dash and the usual tools) plus busybox for hello-busybox.sh,
# and the same CGIs as the anchors serve.
"$GATEWAY" jail init "$WORK/jail" --with "$(readlink -f /bin/busybox)" >/dev/null 2>"$WORK/jail-init.log" ||
    { cat "$WORK/jail-init.log" >&2; die "gateway jail init failed"; }
install -m 755 "$WORK"/www/cgi-bin/* "$WORK/jail/cgi-bin/"

take_port P_GW
take_port P_NGX_PROXY
take_port P_NGX_JGFCGI
take_port P_NGX_FCGIWRAP
take_port P_FCGIWRAP
take_port P_LIGHTTPD
take_port P_ADMIN

setup_url() { # setup, script
    local port
    case $1 in
    jg-direct) port=$P_GW ;;
    jg-proxy) port=$P_NGX_PROXY ;;
    jg-fcgi) port=$P_NGX_JGFCGI ;;
    nginx-fcgiwrap) port=$P_NGX_FCGIWRAP ;;
    lighttpd) port=$P_LIGHTTPD ;;
    esac
    echo "http://127.0.0.1:$port/cgi-bin/$2"
}

# --- the servers --------------------------------------------------------------------------------
# The gateway's own count of running CGIs and waiting requests, from its /metrics when it has
# them (--admin): after a burst both should fall back to 0.
ADMIN_ARGS=()
if "$GATEWAY" --help | grep -q -- '--admin'; then ADMIN_ARGS=(--admin "127.0.0.1:$P_ADMIN"); fi
gateway_counts() { # "running=R queued=Q", or nothing without /metrics
    [ ${#ADMIN_ARGS[@]} -gt 0 ] || return 0
    curl -s --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" 2>/dev/null |
        awk '$1 == "jailgate_running_cgis" { r = $2 } $1 == "jailgate_queued_requests" { q = $2 }
             END { if (r != "" || q != "") printf "running=%s queued=%s", r, q }' || true
}
start_gateway() {
    log "starting the gateway"
    # Logs at the default level (one line per request) to a file that is emptied every round.
    (
        cg_enter gateway
        exec env -i PATH="$CLEAN_PATH" "$GATEWAY" --jail "$WORK/jail" --workers "$WORKERS" \
            --listen "127.0.0.1:$P_GW" --fastcgi "unix:$WORK/fastcgi.sock" \
            --socket-group "$ANCHOR_USER" "${ADMIN_ARGS[@]}"
    ) >"$WORK/gateway.out" 2>>"$WORK/gateway.log" </dev/null &
    GW_PID=$!
    STARTED+=("$GW_PID")
    local end=$((EPOCHSECONDS + 60))
    until grep -q '^jailgate listening on' "$WORK/gateway.out"; do
        alive "$GW_PID" && [ "$EPOCHSECONDS" -lt "$end" ] ||
            { tail -20 "$WORK/gateway.log" >&2; die "the gateway did not start"; }
        sleep 0.05
    done
    # FastCGI on a Unix socket of nginx's group, as examples/nginx/fastcgi_pass.conf says: the
    # gateway takes only its front server's group (--trusted-group) for one. Bound before the
    # ready line.
    [ -S "$WORK/fastcgi.sock" ] || die "the gateway's FastCGI front did not listen"
}

start_nginx() {
    log "starting nginx"
    local n=$WORK/nginx
    mkdir -p "$n"/{client_body,proxy,fastcgi,uwsgi,scgi}
    chown "$ANCHOR_USER:" "$n"/{client_body,proxy,fastcgi,uwsgi,scgi}
    # Three servers in one nginx: proxy_pass and fastcgi_pass to Jailgate, as in
    # examples/nginx/*.conf, and the classic fastcgi_pass to fcgiwrap.
    cat >"$n/nginx.conf" <<EOF
user $ANCHOR_USER;
worker_processes auto;
worker_rlimit_nofile 16384;
daemon off;
pid $n/nginx.pid;
error_log $n/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $n/client_body;
    proxy_temp_path $n/proxy;
    fastcgi_temp_path $n/fastcgi;
    uwsgi_temp_path $n/uwsgi;
    scgi_temp_path $n/scgi;
    client_max_body_size 1g;
    # As examples/nginx/proxy_pass.conf: nginx keeps its connections to the gateway.
    upstream jailgate {
        server 127.0.0.1:$P_GW;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$P_NGX_PROXY;
        location /cgi-bin/ {
            proxy_pass http://jailgate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_request_buffering on;
            proxy_buffering off;
            client_body_buffer_size 256k;
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_read_timeout 300s;
        }
    }
    server {
        listen 127.0.0.1:$P_NGX_JGFCGI;
        location /cgi-bin/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_pass unix:$WORK/fastcgi.sock;
            client_body_buffer_size 256k;
            fastcgi_buffer_size 256k;
            fastcgi_buffers 4 256k;
            fastcgi_read_timeout 300s;
        }
    }
    server {
        listen 127.0.0.1:$P_NGX_FCGIWRAP;
        root $WORK/www;
        location /cgi-bin/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_pass 127.0.0.1:$P_FCGIWRAP;
            fastcgi_read_timeout 300s;
        }
    }
}
EOF
    (
        cg_enter nginx
        exec env -i PATH="$CLEAN_PATH" nginx -p "$n" -c "$n/nginx.conf"
    ) >/dev/null 2>>"$n/stderr.log" </dev/null &
    NGINX_PID=$!
    STARTED+=("$NGINX_PID")
    local port
    for port in "$P_NGX_PROXY" "$P_NGX_JGFCGI" "$P_NGX_FCGIWRAP"; do
        wait_port "$port" 10 || { cat "$n/stderr.log" "$n/error.log" >&2 2>/dev/null; die "nginx did not start"; }
    done
}

start_fcgiwrap() {
    rm -f "$WORK/fcgiwrap.pid"
    (
        cg_enter fcgiwrap
        exec env -i PATH="$CLEAN_PATH" spawn-fcgi -a 127.0.0.1 -p "$P_FCGIWRAP" \
            -F "$FCGIWRAP_CHILDREN" -u "$ANCHOR_USER" -g "$ANCHOR_USER" -P "$WORK/fcgiwrap.pid" \
            -- /usr/sbin/fcgiwrap
    ) >/dev/null 2>>"$WORK/fcgiwrap.log" </dev/null || die "spawn-fcgi failed"
    FCGIWRAP_PIDS=()
    local pid
    while read -r pid || [ -n "$pid" ]; do FCGIWRAP_PIDS+=("$pid"); done <"$WORK/fcgiwrap.pid"
    [ ${#FCGIWRAP_PIDS[@]} = "$FCGIWRAP_CHILDREN" ] || die "spawn-fcgi started ${#FCGIWRAP_PIDS[@]} fcgiwrap processes"
    wait_port "$P_FCGIWRAP" 10 || die "fcgiwrap did not listen"
}
restart_fcgiwrap() { # after a test that can wedge fcgiwrap or leave it a queue of sleepers
    local pid
    for pid in "${FCGIWRAP_PIDS[@]}"; do stop_pid "$pid"; done
    FCGIWRAP_PIDS=()
    start_fcgiwrap
}

start_lighttpd() {
    log "starting lighttpd"
    local l=$WORK/lighttpd
    mkdir -p "$l/upload"
    chown "$ANCHOR_USER:" "$l" "$l/upload" # lighttpd opens its error log after dropping root
    cat >"$l/lighttpd.conf" <<EOF
server.modules = ( "mod_cgi" )
server.document-root = "$WORK/www"
server.bind = "127.0.0.1"
server.port = $P_LIGHTTPD
server.username = "$ANCHOR_USER"
server.groupname = "$ANCHOR_USER"
server.errorlog = "$l/error.log"
server.upload-dirs = ( "$l/upload" )
server.max-fds = 16384
server.max-connections = 4096
server.max-request-size = 1048576
\$HTTP["url"] =~ "^/cgi-bin/" {
    cgi.assign = ( "" => "" )
}
EOF
    (
        cg_enter lighttpd
        exec env -i PATH="$CLEAN_PATH" lighttpd -D -f "$l/lighttpd.conf"
    ) >/dev/null 2>>"$l/stderr.log" </dev/null &
    LIGHTTPD_PID=$!
    STARTED+=("$LIGHTTPD_PID")
    wait_port "$P_LIGHTTPD" 10 || { cat "$l/stderr.log" "$l/error.log" >&2 2>/dev/null; die "lighttpd did not start"; }
}

start_gateway
start_nginx
log "starting fcgiwrap"
start_fcgiwrap
start_lighttpd

# --- the gateway's processes and their memory ---------------------------------------------------
children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
comm() { cat "/proc/$1/comm" 2>/dev/null || true; }
find_gateway_processes() { # FRONT_PID; WORKER_OUTER (the supervisor's children) and WORKER_INNER (pid 1 in the jail)
    FRONT_PID=
    WORKER_OUTER=()
    WORKER_INNER=()
    local child grandchild
    for child in $(children "$GW_PID"); do
        case $(comm "$child") in
        gateway) FRONT_PID=$child ;;
        jailgate-worker)
            WORKER_OUTER+=("$child")
            for grandchild in $(children "$child"); do
                [ "$(comm "$grandchild")" = jailgate-worker ] && WORKER_INNER+=("$grandchild")
            done
            ;;
        esac
    done
    [ -n "$FRONT_PID" ] || die "cannot find the gateway's front process"
}
status_kb() { # pid, field (VmRSS, VmHWM)
    local key value unit
    { while read -r key value unit; do
        [ "$key" = "$2:" ] && { echo "$value"; return 0; }
    done 2>/dev/null <"/proc/$1/status"; } 2>/dev/null || true
    echo 0 # gone
}
pss_kb() {
    local key value unit
    { while read -r key value unit; do
        [ "$key" = Pss: ] && { echo "$value"; return 0; }
    done 2>/dev/null <"/proc/$1/smaps_rollup"; } 2>/dev/null || true
    echo 0 # gone
}
META=$WORK/meta.tsv
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
record_memory() { # prefix: the gateway's memory now, per process
    local prefix=$1 i
    find_gateway_processes
    meta "${prefix}_supervisor_rss_kb" "$(status_kb "$GW_PID" VmRSS)"
    meta "${prefix}_supervisor_pss_kb" "$(pss_kb "$GW_PID")"
    meta "${prefix}_front_rss_kb" "$(status_kb "$FRONT_PID" VmRSS)"
    meta "${prefix}_front_pss_kb" "$(pss_kb "$FRONT_PID")"
    meta "${prefix}_front_hwm_kb" "$(status_kb "$FRONT_PID" VmHWM)"
    for i in "${!WORKER_OUTER[@]}"; do
        meta "${prefix}_worker${i}_outer_rss_kb" "$(status_kb "${WORKER_OUTER[i]}" VmRSS)"
        meta "${prefix}_worker${i}_outer_pss_kb" "$(pss_kb "${WORKER_OUTER[i]}")"
    done
    for i in "${!WORKER_INNER[@]}"; do
        meta "${prefix}_worker${i}_inner_rss_kb" "$(status_kb "${WORKER_INNER[i]}" VmRSS)"
        meta "${prefix}_worker${i}_inner_pss_kb" "$(pss_kb "${WORKER_INNER[i]}")"
    done
}
# Samples the front's and the workers' VmRSS every 0.2 s until $WORK/sampler.stop appears (or
# 120 s pass); writes "front_start_kb front_peak_kb worker_peak_kb cgi_peak" to $1.
rss_sampler() {
    local out=$1 end=$((EPOCHSECONDS + 120)) front=0 worker=0 cgis=0 v pid n
    local start
    start=$(status_kb "$FRONT_PID" VmRSS)
    while [ -d "$WORK" ] && [ ! -e "$WORK/sampler.stop" ] && [ "$EPOCHSECONDS" -lt "$end" ]; do
        v=$(status_kb "$FRONT_PID" VmRSS)
        [ "$v" -gt "$front" ] && front=$v
        n=0
        for pid in "${WORKER_OUTER[@]}" "${WORKER_INNER[@]}"; do
            v=$(status_kb "$pid" VmRSS)
            [ "$v" -gt "$worker" ] && worker=$v
        done
        for pid in "${WORKER_INNER[@]}"; do
            set -- $(children "$pid")
            n=$((n + $#))
        done
        [ "$n" -gt "$cgis" ] && cgis=$n
        sleep 0.2
    done
    echo "$start $front $worker $cgis" >"$out"
}

# --- checks: does every setup answer every script correctly? -------------------------------------
expected_body() { # script -> "exact TEXT" or "bytes N"
    case $1 in
    hello*) echo "exact hello" ;;
    out1m.sh) echo "bytes 1048576" ;;
    sleep1.sh) echo "exact slept" ;;
    esac
}
CHECKS=$WORK/checks.tsv
check_setup_script() { # setup, script: one line to $CHECKS (setup script verdict)
    local setup=$1 script=$2 verdict kind want code body
    read -r kind want <<<"$(expected_body "$script")"
    if [ "$setup" = ceiling ]; then
        local out
        out=$(timeout 20 "$CEILING" -c 1 -n 1 $([ "$kind" = bytes ] && echo "-e $want" || echo "-e $((${#want} + 1))") \
            "$WORK/www/cgi-bin/$script" 2>&1) || true
        [[ $out == *"requests=1 errors=0"* ]] && verdict=ok || verdict="FAIL: $out"
    else
        code=$(curl -sS --max-time 20 -o "$WORK/check.out" -w '%{http_code}' "$(setup_url "$setup" "$script")" 2>&1) || true
        if [ "$code" != 200 ]; then
            verdict="FAIL: HTTP $code"
        elif [ "$kind" = exact ] && [ "$(cat "$WORK/check.out")" != "$want" ]; then
            verdict="FAIL: body $(head -c 60 "$WORK/check.out" | tr -c '[:print:]' '?')"
        elif [ "$kind" = bytes ] && [ "$(stat -c %s "$WORK/check.out")" != "$want" ]; then
            verdict="FAIL: $(stat -c %s "$WORK/check.out") bytes"
        else
            verdict=ok
        fi
    fi
    printf '%s\t%s\t%s\n' "$setup" "$script" "$verdict" >>"$CHECKS"
    [ "$verdict" = ok ] || log "check $setup $script: $verdict"
}
# The 64 MiB POST echo through one setup with curl: "ok", or what went wrong ("wedged": no
# answer within $WEDGE_SECONDS s, as nginx + fcgiwrap does with any body over a pipe's worth).
echo_check() {
    local setup=$1 code rc=0
    if [ "$setup" = ceiling ]; then
        local out
        out=$(timeout 60 "$CEILING" -c 1 -n 1 -b "$WORK/body" "$WORK/www/cgi-bin/echo.sh" 2>&1) || true
        [[ $out == *"requests=1 errors=0"* ]] && echo ok || echo "FAIL: $out"
        return
    fi
    rm -f "$WORK/echo.out"
    code=$(curl -sS --max-time "$WEDGE_SECONDS" -H 'Expect:' -H 'Content-Type: application/octet-stream' \
        -X POST -T "$WORK/body" -o "$WORK/echo.out" -w '%{http_code}' "$(setup_url "$setup" echo.sh)" 2>/dev/null) || rc=$?
    if [ "$rc" = 28 ]; then
        echo "wedged (no answer in ${WEDGE_SECONDS} s)"
    elif [ "$rc" != 0 ]; then
        echo "FAIL: curl exit $rc, HTTP $code"
    elif [ "$code" != 200 ]; then
        echo "FAIL: HTTP $code"
    elif cmp -s "$WORK/body" "$WORK/echo.out"; then
        echo ok
    else
        echo "FAIL: echoed $(stat -c %s "$WORK/echo.out" 2>/dev/null || echo 0) bytes, not the same"
    fi
    rm -f "$WORK/echo.out"
}

log "checking every setup with every script"
for setup in "${SETUPS[@]}"; do
    for script in hello.sh hello-busybox.sh hello-static out1m.sh sleep1.sh; do
        [ "$setup" = ceiling ] && [ "$script" = sleep1.sh ] && continue
        check_setup_script "$setup" "$script"
    done
done
sleep 1
record_memory idle_start

# --- one measurement ----------------------------------------------------------------------------
RESULTS=$WORK/results.tsv
printf 'script\tconc\tsetup\tround\tgood\tseconds\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\tsetup_cpu_us\tclient_cpu_us\tmachine_cpu_us\tnote\n' >"$RESULTS"

parse_wrk() { # wrk --latency output -> "requests seconds non2xx socket_errors p50_ms p99_ms statuses"
    awk '
        function ms(v) {
            if (v ~ /us$/) return v / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /s$/) return v * 1000
            if (v ~ /m$/) return v * 60000
            return v + 0
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        / requests in / { req = $1; d = $4; sub(/,$/, "", d); secs = ms(d) / 1000 }
        /Socket errors:/ { gsub(/,/, ""); se = $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { n2 = $5 }
        /^statuses:/ { st = $0; sub(/^statuses: */, "", st); gsub(/ /, ",", st) }
        END { printf "%d %.3f %d %d %.3f %.3f %s\n", req, secs, n2, se, p50, p99, (st == "" ? "-" : st) }'
}

# What the gateway's log says about the answers that were not 200 in one measurement: their
# statuses and its most frequent warning ("503=12,502=3 warn(3): gateway::cgi: CGI stderr: ...").
gateway_log_summary() {
    awk '
        # "status=503" (tracing fields) or "... HTTP/1.1" 503 ..." (the combined access log)
        match($0, /status=[0-9]+/) { s = substr($0, RSTART + 7, RLENGTH - 7); if (s != "200") st[s]++; next }
        match($0, /HTTP\/[0-9.]+" [0-9]+ /) { s = substr($0, RSTART, RLENGTH); sub(/.*" /, "", s); sub(/ $/, "", s); if (s != "200") st[s]++ }
        / WARN / { sub(/.* WARN [^ ]* /, ""); w[substr($0, 1, 100)]++ }
        END {
            out = ""
            for (s in st) out = out (out == "" ? "" : ",") s "=" st[s]
            n = 0
            for (m in w) if (w[m] > n) { n = w[m]; best = m }
            if (n) out = out " warn(" n "): " best
            gsub(/\t/, " ", out)
            print (out == "" ? "nothing logged" : out)
        }' "$WORK/gateway.log"
}

measure() { # script, concurrency, setup, round
    local script=$1 conc=$2 setup=$3 round=$4
    local seconds=$SECONDS_PER_RUN note=- gw= cpu0 cpu1 client0 client1 m0 m1 out
    local requests=0 secs=0 non2xx=0 sockerr=0 p50=0 p99=0 statuses=-
    local body_args=()
    [ "$script" = sleep1.sh ] && seconds=$SLEEP_SECONDS
    if [ "$script" = echo.sh ]; then
        note=$(echo_check "$setup")
        [ "$setup" = nginx-fcgiwrap ] && restart_fcgiwrap # a wedged worker stays wedged
        if [ "$note" != ok ]; then
            printf '%s\t%s\t%s\t%s\t0\t0\t0\t0\t0\t1\t0\t0\t0\techo %s\n' "$script" "$conc" "$setup" "$round" "$note" >>"$RESULTS"
            log "  $setup: echo $note"
            return
        fi
        note="echo ok"
    fi
    [[ $setup == jg-* ]] && : >"$WORK/gateway.log"
    cpu0=$(setup_usage_us "$setup")
    client0=$(cg_usage_us client)
    m0=$(machine_busy_us)
    if [ "$setup" = ceiling ]; then
        local expect=()
        case $script in
        echo.sh) body_args=(-b "$WORK/body") ;;
        out1m.sh) expect=(-e 1048576) ;;
        *) expect=(-e 6) ;;
        esac
        out=$(
            cg_enter ceiling
            exec timeout -k 5 $((seconds + 60)) "$CEILING" -c "$conc" -d "$seconds" "${body_args[@]}" "${expect[@]}" \
                "$WORK/www/cgi-bin/$script"
        ) || true
        cpu1=$(setup_usage_us "$setup")
        client1=$client0
        m1=$(machine_busy_us)
        local kv errors=0
        for kv in $out; do
            case $kv in
            requests=*) requests=${kv#*=} ;; errors=*) errors=${kv#*=} ;;
            seconds=*) secs=${kv#*=} ;; p50_ms=*) p50=${kv#*=} ;; p99_ms=*) p99=${kv#*=} ;;
            esac
        done
        non2xx=$errors # the ceiling counts a request done only when its output was right
        requests=$((requests + errors))
    else
        local wrk_args=(-t "$((conc < 2 ? 1 : 2))" -c "$conc" -d "${seconds}s" --latency)
        local sampler=
        case $script in
        echo.sh) wrk_args+=(--timeout 30s -s "$BENCH/wrk-post.lua") ;;
        sleep1.sh) wrk_args+=(--timeout "${seconds}s" -s "$BENCH/wrk-statuses.lua") ;;
        *) wrk_args+=(--timeout 10s) ;;
        esac
        if [[ $setup == jg-* && ($script == sleep1.sh || $script == echo.sh) ]]; then
            find_gateway_processes
            rm -f "$WORK/sampler.stop" "$WORK/sampler.out"
            rss_sampler "$WORK/sampler.out" &
            sampler=$!
        fi
        out=$(
            cg_enter client
            JAILGATE_BENCH_BODY=$WORK/body exec timeout -k 5 $((seconds + 60)) wrk "${wrk_args[@]}" \
                "$(setup_url "$setup" "$script")" 2>&1
        ) || true
        cpu1=$(setup_usage_us "$setup")
        client1=$(cg_usage_us client)
        m1=$(machine_busy_us)
        read -r requests secs non2xx sockerr p50 p99 statuses <<<"$(parse_wrk <<<"$out")"
        [ "$script" = sleep1.sh ] && note="statuses=$statuses"
        if [ -n "$sampler" ]; then
            touch "$WORK/sampler.stop"
            wait "$sampler" || true
            local front_start front_peak worker_peak cgi_peak
            read -r front_start front_peak worker_peak cgi_peak <"$WORK/sampler.out"
            note="$note front_start_kb=$front_start front_peak_kb=$front_peak worker_peak_kb=$worker_peak cgis_peak=$cgi_peak front_hwm_kb=$(status_kb "$FRONT_PID" VmHWM)"
        fi
        [ "$requests" -gt 0 ] || log "  $setup: wrk made no request: $(tail -3 <<<"$out" | tr '\n' ' ')"
        if [[ $setup == jg-* ]] && [ "$non2xx" -gt 0 ]; then gw=$(gateway_log_summary); fi
    fi
    if [ "$script" = sleep1.sh ]; then
        settle "$setup"
        if [[ $setup == jg-* ]]; then
            local counts
            counts=$(gateway_counts) # "running=R queued=Q" once the burst is over
            [ -z "$counts" ] || note="$note after_${counts/ / after_}"
        fi
    fi
    [ -z "$gw" ] || note="$note | gw: $gw"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$script" "$conc" "$setup" "$round" \
        "$((requests - non2xx))" "$secs" "$p50" "$p99" "$non2xx" "$sockerr" "$((cpu1 - cpu0))" \
        "$((client1 - client0))" "$((m1 - m0))" "$note" >>"$RESULTS"
}

# After the 1,000-connection test: wait until the setup has no CGI left running (up to 20 s);
# fcgiwrap is restarted instead, since it would go on serving the queue nginx left it.
IDLE_COUNT_gateway=0 IDLE_COUNT_lighttpd=0 IDLE_COUNT_nginx=0
settle() {
    local setup=$1 cg end=$((EPOCHSECONDS + 20)) busy name
    if [ "$setup" = nginx-fcgiwrap ]; then restart_fcgiwrap; fi
    [ "$CG_KIND" = none ] && { sleep 3; return; }
    while [ "$EPOCHSECONDS" -lt "$end" ]; do
        busy=0
        for cg in gateway lighttpd nginx; do
            name=IDLE_COUNT_$cg
            [ "$(cg_count "$cg")" -le "${!name}" ] || busy=1
        done
        [ "$busy" = 0 ] && return
        sleep 0.2
    done
    log "  $setup: still busy 20 s after the 1,000-connection test"
}
for cg in gateway lighttpd nginx; do printf -v "IDLE_COUNT_$cg" %s "$(cg_count "$cg")"; done

# --- the rounds ---------------------------------------------------------------------------------
log "measuring: ${#CASES[@]} cases x ${#SETUPS[@]} setups x $ROUNDS rounds, ${SECONDS_PER_RUN} s each (sleep test ${SLEEP_SECONDS} s)"
for ((round = 1; round <= ROUNDS; round++)); do
    : >"$WORK/gateway.log"
    for case_ in "${CASES[@]}"; do
        script=${case_%%:*}
        conc=${case_##*:}
        log "round $round/$ROUNDS: $script c=$conc"
        for ((k = 0; k < ${#SETUPS[@]}; k++)); do
            setup=${SETUPS[(k + round - 1) % ${#SETUPS[@]}]}
            [ "$setup" = ceiling ] && [ "$script" = sleep1.sh ] && continue
            measure "$script" "$conc" "$setup" "$round"
        done
    done
done
sleep 1
record_memory idle_end
meta end_counts "$(gateway_counts)"

# --- the report ---------------------------------------------------------------------------------
version_of() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo "?"; }
meta mode "$([ "$QUICK" = 1 ] && echo quick || echo full)"
meta rounds "$ROUNDS"
meta seconds_per_run "$SECONDS_PER_RUN"
meta sleep_seconds "$SLEEP_SECONDS"
meta workers "$WORKERS"
meta fcgiwrap_children "$FCGIWRAP_CHILDREN"
meta cpu_accounting "$CG_KIND"
meta scheduling "$CPU_MODE"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta duration_s $((EPOCHSECONDS - START_EPOCH))
meta cpu_model "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta cores "$(nproc)"
meta memory "$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
meta kernel "$(uname -r)"
meta os "$(. /etc/os-release && echo "$PRETTY_NAME")"
meta nginx "$(nginx -v 2>&1 | sed 's/^nginx version: //') (Debian $(version_of nginx))"
meta lighttpd "$(lighttpd -v 2>&1 | head -1 | awk '{ print $1 }') (Debian $(version_of lighttpd))"
meta fcgiwrap "$(version_of fcgiwrap)"
meta spawn_fcgi "$(version_of spawn-fcgi)"
meta wrk "$(version_of wrk)"
meta busybox "$(/bin/busybox 2>&1 | head -1 | awk '{ print $2 }')"
meta dash "$(version_of dash)"
meta rustc "$(rustc --version 2>/dev/null || echo '?')"
meta commit "$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
/usr/bin/python3 "$BENCH/report.py" "$WORK" "$BENCH/RESULTS.md" "$BENCH/results.png"
cp "$RESULTS" "$BENCH/results.tsv"
if [ -n "${BENCH_RAW:-}" ]; then mkdir -p "$BENCH_RAW" && cp "$WORK"/*.tsv "$BENCH_RAW"/; fi
log "done in $(((EPOCHSECONDS - START_EPOCH) / 60)) min $(((EPOCHSECONDS - START_EPOCH) % 60)) s: bench/RESULTS.md, bench/results.png"
