#!/usr/bin/env bash
# The checks of scripts/debian-test.sh, run INSIDE the booted Debian container by the oneshot
# unit jailgate-debian-test.service once multi-user.target is reached. Each check is a named
# step, timed; the first that fails stops the run with its name and what it saw, plus the
# units' status and journal. The exit status goes to /results/status (a folder of the host);
# the unit powers the container off afterwards whatever happened.
#
# From /debian-test/env: DEB, VERSION (the package), NEW_DEB, NEW_VERSION (the same binaries
# as a newer version, for the upgrade).
set -euo pipefail

: "${DEB:?}" "${VERSION:?}" "${NEW_DEB:?}" "${NEW_VERSION:?}"
export DEBIAN_FRONTEND=noninteractive
# apt waits for dpkg's lock (apt's daily timer could hold it) instead of failing at once.
apt_opts=(-o DPkg::Lock::Timeout=60)
units=(jailgate.service jailgate.socket jailgate-fastcgi.socket)
http_sock=/run/jailgate/http.sock
fastcgi_sock=/run/jailgate/fastcgi.sock
hello="Hello from Jailgate"
# The ids of the gateway's own (README "Accounts"): the front, the workers, then the CGIs'.
first_id=1879048190
last_id=1880096767
# nginx in front: the ports the examples listen on, unless they collide (step 2); then these,
# of this container's own network (it has no other).
proxy_port=8081
fastcgi_port=8082
declare -A port_of=([proxy_pass]=$proxy_port [fastcgi_pass]=$fastcgi_port)
work=/tmp/debian-test
mkdir -p "$work"

current_step="start"
step_started=0
times=()
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
log() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*"; }
fail() { log "FAILED in step '$current_step': $*"; reported=yes; exit 1; }
reported=no
step() {
  [ "$step_started" = 0 ] || times+=("$current_step: $(elapsed "$step_started") s")
  current_step="$1"
  step_started=$(now)
  log "=== step: $current_step"
}

finish() {
  local status=$?
  [ "$step_started" = 0 ] || times+=("$current_step: $(elapsed "$step_started") s")
  if [ "$status" != 0 ]; then
    # Stopped from outside (the unit's TimeoutStartSec=) or by a command that failed unchecked.
    [ "$reported" = yes ] || log "FAILED in step '$current_step': stopped with status $status (a timeout, or a command above failed)"
    log "--- diagnostics after the failure"
    systemctl --no-pager status "${units[@]}" nginx.service 2>&1 | tail -n 60 || true
    log "--- journalctl -u jailgate (last 40 lines)"
    journalctl --no-pager -u jailgate -n 40 2>&1 || true
    log "--- journalctl -p warning (last 20 lines)"
    journalctl --no-pager -p warning -n 20 2>&1 || true
  fi
  log "--- times inside the container"
  printf '  %s\n' "${times[@]}"
  log "checks ended with status $status"
  echo "$status" > /results/status
}
trap finish EXIT
# systemd stops the unit with SIGTERM when TimeoutStartSec= is over: report that too.
trap 'exit 143' TERM

# One request; prints the HTTP status (000 when there was no answer, "body" when the answer is
# not the sample CGI's) and the seconds it took. 30 s at most: during an upgrade, new requests
# wait in the socket's backlog until the old gateway has drained (the slow request below).
request() { # URL [curl options...]
  local url="$1" out
  shift
  out="$(curl -sS --max-time 30 -w '\n%{http_code} %{time_total}' "$@" "$url" 2>&1)" || true
  local last="${out##*$'\n'}"
  local code="${last%% *}"
  if [ "$code" = 200 ] && [[ "$out" != *"$hello"* ]]; then code=body; fi
  echo "$code ${last#* }"
}
# The answer of one request, for the messages.
show() { curl -sS --max-time 10 -i "$@" 2>&1 | head -n 20 || true; }

# A load: 4 background loops (2 through nginx's proxy_pass, 2 through fastcgi_pass), each
# sending requests one after another, each with a query of its own (TAG-LOOP-N) so that the
# access log can be checked request by request; they stop when $work/stop-TAG appears or after
# 800 requests or 90 s each. Each loop writes "N CODE SECONDS" per request to $work/TAG-LOOP.
load_start() { # TAG
  local tag="$1" loop
  rm -f "$work/stop-$tag"
  load_pids=()
  for loop in 1 2 3 4; do
    local port="${port_of[proxy_pass]}"
    [ $((loop % 2)) = 0 ] && port="${port_of[fastcgi_pass]}"
    : > "$work/$tag-$loop"
    (
      deadline=$((SECONDS + 90))
      n=0
      while [ ! -e "$work/stop-$tag" ] && [ "$n" -lt 800 ] && [ "$SECONDS" -lt "$deadline" ]; do
        n=$((n + 1))
        echo "$n $(request "http://127.0.0.1:$port/cgi-bin/hello?$tag-$loop-$n")" >> "$work/$tag-$loop"
      done
    ) &
    load_pids+=($!)
  done
}
load_count() { cat "$work/$1"-[1-4] | wc -l; }
# Waits (bounded) until the load has sent N more requests than when asked.
load_wait_more() { # TAG N WHAT
  local target=$(($(load_count "$1") + $2)) _
  for _ in $(seq 300); do
    [ "$(load_count "$1")" -ge "$target" ] && return 0
    sleep 0.1
  done
  fail "the load did not send $2 requests within 30 s $3 (sent $(load_count "$1") in all)"
}
load_stop() { # TAG: stops the loops, checks every answer was the sample CGI's with 200
  local tag="$1" pid
  touch "$work/stop-$tag"
  # Each loop ends within its current request (curl --max-time 10) and its own deadline.
  for pid in "${load_pids[@]}"; do wait "$pid"; done
  local sent bad slowest
  sent="$(load_count "$tag")"
  bad="$(cat "$work/$tag"-[1-4] | awk '$2 != 200' | wc -l)"
  slowest="$(cat "$work/$tag"-[1-4] | awk '$3 > max {max = $3} END {printf "%.2f", max}')"
  log "load '$tag': $sent requests, $bad not answered 200 with the sample CGI's body; the slowest took $slowest s"
  if [ "$bad" != 0 ]; then
    grep -H -v ' 200 ' "$work/$tag"-[1-4] | head -n 20
    fail "$bad of $sent requests under load were lost or failed (file:request status above)"
  fi
}

main_pid() { systemctl show -p MainPID --value jailgate.service; }
# pids of the processes running /usr/bin/jailgate-worker (the workers and their holders), sorted
worker_pids() {
  local dir
  for dir in /proc/[0-9]*; do
    if [[ "$(readlink "$dir/exe" 2>/dev/null)" == /usr/bin/jailgate-worker* ]]; then echo "${dir#/proc/}"; fi
  done | sort
}

# A slow request in flight while the service stops (upgrade, stop): /cgi-bin/slow?SECONDS-TAG,
# a CGI added to the package's jail in step 1 (as a user adds CGIs), answers after SECONDS. The
# service's stop must drain it: it gets its whole answer, and its access line comes after
# systemd's "Stopping jailgate.service" (so it was in flight when the stop began).
slow_start() { # TAG SECONDS: starts one in the background, returns once its CGI runs
  curl -sS --max-time 30 -o "$work/slow-$1" -w '%{http_code}' --unix-socket "$http_sock" \
    "http://localhost/cgi-bin/slow?$2-$1" > "$work/slow-$1.code" 2> "$work/slow-$1.err" &
  slow_pid=$!
  local _
  for _ in $(seq 100); do
    [ -n "$(cgi_sleeping)" ] && return 0
    sleep 0.05
  done
  fail "the slow request ($1) did not reach a CGI within 5 s"
}
slow_check() { # TAG WHAT N: N-th stop of the service in its journal
  wait "$slow_pid" || true
  local code body
  code="$(cat "$work/slow-$1.code")"
  body="$(cat "$work/slow-$1")"
  if [ "$code" != 200 ] || [ "$body" != "slow done" ]; then
    fail "a request in flight during $2 was lost: status '$code', body '$body' $(cat "$work/slow-$1.err")"
  fi
  local journal stopping done_at
  journal="$(journalctl --no-pager -u jailgate.service -o short-unix)"
  stopping="$(grep 'Stopping jailgate.service' <<< "$journal" | sed -n "$3p" | cut -d' ' -f1)"
  done_at="$(grep -m 1 "access: .*/cgi-bin/slow?[0-9]*-$1 " <<< "$journal" | cut -d' ' -f1)"
  [ -n "$stopping" ] || fail "no stop number $3 of jailgate.service in its journal ($2)"
  [ -n "$done_at" ] || fail "no access line of the slow request in flight during $2"
  awk -v a="$stopping" -v b="$done_at" 'BEGIN {exit !(a < b)}' ||
    fail "the slow request was over before $2 began (at $done_at, stop at $stopping): lengthen it"
  log "a request in flight when $2 began: 200, whole answer, $(awk -v a="$stopping" -v b="$done_at" 'BEGIN {printf "%.1f", b - a}') s after the stop began"
}
# pids of sleep processes running with a CGI id (first_id + 2 onwards)
cgi_sleeping() {
  local dir
  for dir in /proc/[0-9]*; do
    [ "$(cat "$dir/comm" 2>/dev/null)" = sleep ] || continue
    if awk -v a="$((first_id + 2))" -v b="$last_id" '/^Uid:/ && $2 >= a && $2 <= b {found = 1} END {exit !found}' "$dir/status" 2>/dev/null; then
      echo "${dir#/proc/}"
    fi
  done
}

# Everything of the gateway still running: processes whose executable is one of the package's
# binaries, or whose uids or gids are the gateway's own ids.
gateway_processes() {
  local dir pid exe ids
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    exe="$(readlink "$dir/exe" 2>/dev/null || true)"
    ids="$(awk '/^(Uid|Gid):/ {print $2, $3, $4, $5}' "$dir/status" 2>/dev/null || true)"
    if [[ "$exe" == /usr/bin/gateway* || "$exe" == /usr/bin/jailgate-worker* ]] ||
      echo "$ids" | tr ' ' '\n' | awk -v a="$first_id" -v b="$last_id" '$1 >= a && $1 <= b {f=1} END {exit !f}'; then
      echo "pid $pid exe=${exe:-?} ids=[$(echo "$ids" | paste -sd' ')] cmd=$(tr '\0' ' ' < "$dir/cmdline" 2>/dev/null || true)"
    fi
  done
}

# The file system as purge must leave it, minus what legitimately changes between before the
# install and after the purge: the API file systems and runtime state, logs and the journal,
# dpkg's and apt's own databases and caches, the temporary folders, this test's own folders.
# Types, modes and owners of every path: a file left behind or a mode changed shows.
fs_listing() {
  find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
    -o -path /var/tmp -o -path /var/log -o -path /var/cache/apt -o -path /var/cache/debconf \
    -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /results -o -path /debian-test \
    -o -path /var/lib/systemd/timers -o -path /var/lib/systemd/random-seed \) -prune \
    -o -printf '%y %m %u:%g %p\n' | sort
}

log "jailgate $VERSION on $(grep -oP '^PRETTY_NAME="\K[^"]*' /etc/os-release), systemd $(systemctl --version | awk 'NR == 1 {print $2}'), kernel $(uname -r)"
log "system state: $(systemctl is-system-running || true)"

# ----------------------------------------------------------------------------------------------
step "1. install; sockets listen; the first request starts the service"
fs_listing > "$work/fs-before"
apt_log="$work/apt-install.log"
# As the README's install section has it: `apt install ./jailgate_*.deb`.
(cd "$(dirname "$DEB")" && timeout 120 apt install -y "${apt_opts[@]}" "./$(basename "$DEB")") < /dev/null > "$apt_log" 2>&1 ||
  { cat "$apt_log"; fail "apt install ./$(basename "$DEB") failed (log above)"; }
grep -E '^(jailgate|Setting up|W:|E:)' "$apt_log" || true
[ "$(dpkg-query -W -f '${db:Status-Abbrev}' jailgate)" = "ii " ] || fail "dpkg does not list jailgate as installed"
for unit in jailgate.socket jailgate-fastcgi.socket; do
  [ "$(systemctl is-enabled "$unit" || true)" = enabled ] || fail "$unit is not enabled after the install"
  [ "$(systemctl is-active "$unit" || true)" = active ] || fail "$unit is not active (listening) after the install"
done
state="$(systemctl is-active jailgate.service || true)"
[ "$state" = inactive ] || fail "jailgate.service is '$state' before any request: socket activation should start it on the first one"
log "jailgate.socket and jailgate-fastcgi.socket enabled and listening; jailgate.service inactive"
for sock in "$http_sock" "$fastcgi_sock"; do
  [ -S "$sock" ] || fail "no socket $sock"
  perms="$(stat -c '%a %U:%G' "$sock")"
  [ "$perms" = "660 root:www-data" ] || fail "$sock is '$perms', not '660 root:www-data'"
done
[ -x /var/lib/jailgate/jail/cgi-bin/hello ] || fail "no sample CGI /var/lib/jailgate/jail/cgi-bin/hello"
cat > /var/lib/jailgate/jail/cgi-bin/slow <<'EOF'
#!/bin/sh
seconds="${QUERY_STRING%%-*}"
case "$seconds" in '' | *[!0-9]*) seconds=1 ;; esac
sleep "$seconds"
printf 'Content-Type: text/plain\n\nslow done\n'
EOF
chmod 755 /var/lib/jailgate/jail/cgi-bin/slow
[ -f /etc/jailgate/jailgate.toml ] || fail "no /etc/jailgate/jailgate.toml"
dpkg-query -L jailgate | grep -qx /usr/share/man/man1/gateway.1.gz || fail "no man page gateway(1) in the package"
zcat /usr/share/man/man1/gateway.1.gz | grep -q '^\.TH' || fail "/usr/share/man/man1/gateway.1.gz is no man page (no .TH)"
gateway --version || fail "gateway --version fails"
gateway jail check /var/lib/jailgate/jail > "$work/jail-check" 2>&1 ||
  { cat "$work/jail-check"; fail "the package's jail fails gateway jail check (above)"; }
t=$(now)
answer="$(curl -sS --max-time 30 --unix-socket "$http_sock" http://localhost/cgi-bin/hello 2>&1)" ||
  fail "the first request on $http_sock got no answer: $answer"
[[ "$answer" == *"$hello"* ]] || fail "the first request on $http_sock answered '$answer', not '$hello'"
log "first request (starts the service): $(elapsed "$t") s: $answer"
state="$(systemctl is-active jailgate.service || true)"
[ "$state" = active ] || fail "jailgate.service is '$state' after the first request, not active"
log "jailgate.service active, main pid $(main_pid)"

# ----------------------------------------------------------------------------------------------
step "2. nginx in front, with the shipped example configs"
examples=/usr/share/doc/jailgate/examples/nginx
# As the README says: copy each example, a file of nginx's http block, to /etc/nginx/conf.d/
# as-is. Only if the two would collide with each other or Debian's default site (port 80) does
# the copy get its listen lines replaced by one on a port of this test's.
listen_port() { # FILE: the port of its first listen line ("listen [ADDR:]PORT ...;")
  awk '/^[[:space:]]*listen[[:space:]]/ {sub(/;.*/, ""); n = split($2, a, ":"); print a[n]; exit}' "$1"
}
port_of=()
for name in proxy_pass fastcgi_pass; do
  example="$examples/$name.conf"
  [ -f "$example" ] || fail "the package has no $example"
  port="$(listen_port "$example")"
  [[ "$port" =~ ^[0-9]+$ ]] || fail "$example has no listen line with a port"
  [ ! -e "/etc/nginx/conf.d/$name.conf" ] || fail "/etc/nginx/conf.d/$name.conf exists already"
  if [ "$port" = 80 ] || [ "$port" = "${port_of[proxy_pass]:-}" ]; then
    [ "$name" = proxy_pass ] && port=$proxy_port || port=$fastcgi_port
    awk -v port="$port" '
      /^[[:space:]]*listen[[:space:]]/ { if (!done) { sub(/listen.*/, "listen 127.0.0.1:" port ";"); print; done = 1 }; next }
      { print }' "$example" > "/etc/nginx/conf.d/$name.conf"
    log "$example collides on its port: copied to /etc/nginx/conf.d/ listening on 127.0.0.1:$port"
  else
    cp "$example" /etc/nginx/conf.d/
    log "$example copied to /etc/nginx/conf.d/ as-is (listens on port $port)"
  fi
  port_of[$name]=$port
done
nginx_t="$(nginx -t 2>&1)" || { echo "$nginx_t"; fail "nginx -t refuses the shipped examples (above)"; }
timeout 30 systemctl reload nginx.service || fail "systemctl reload nginx failed"
for name in proxy_pass fastcgi_pass; do
  port="${port_of[$name]}"
  # nginx's reload is asynchronous: poll (bounded) until the new server answers.
  code=none
  for _ in $(seq 50); do
    code="$(request "http://127.0.0.1:$port/cgi-bin/hello" | cut -d' ' -f1)"
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  if [ "$code" != 200 ]; then
    show "http://127.0.0.1:$port/cgi-bin/hello"
    fail "through nginx $name (port $port) the sample CGI answered '$code' (answer above)"
  fi
  log "through nginx $name: 200, $hello"
done

# ----------------------------------------------------------------------------------------------
step "3. systemctl reload under load loses no request"
pid_before="$(main_pid)"
workers_before="$(worker_pids)"
[ -n "$workers_before" ] || fail "no jailgate-worker process runs"
load_start reload
load_wait_more reload 80 "before the reload"
timeout 30 systemctl reload jailgate.service || fail "systemctl reload jailgate.service failed"
log "reloaded after $(load_count reload) requests"
load_wait_more reload 200 "after the reload"
load_stop reload
[ "$(main_pid)" = "$pid_before" ] || fail "the main pid changed from $pid_before to $(main_pid): a reload must not restart"
journalctl --no-pager -u jailgate.service -g 'SIGHUP' -o cat | tail -n 3 | grep . ||
  fail "no SIGHUP line in the gateway's journal: the reload did not reach it"
# The reload started a fresh pool and retired the old one once its last CGI was over.
for _ in $(seq 50); do
  old_left="$(comm -12 <(echo "$workers_before") <(worker_pids))"
  [ -z "$old_left" ] && break
  sleep 0.1
done
[ -z "$old_left" ] || fail "workers of the pool before the reload still run 5 s after the load: $(echo "$old_left" | paste -sd' ')"
log "the old pool's workers ($(echo "$workers_before" | paste -sd' ')) are gone; now: $(worker_pids | paste -sd' ')"

# ----------------------------------------------------------------------------------------------
step "4. journalctl -u jailgate holds the access log"
# Every request of the load in step 3 has a line of its own (its query is unique). The journal
# takes the lines as they come; poll (bounded) until the last is in.
expected="$(load_count reload)"
found=0
for _ in $(seq 50); do
  journalctl --no-pager -u jailgate -o cat -g 'access: .*"GET /cgi-bin/hello\?reload-' > "$work/access-log"
  found="$(grep -o 'hello?reload-[0-9]-[0-9]*' "$work/access-log" | sort -u | wc -l)"
  [ "$found" -ge "$expected" ] && break
  sleep 0.2
done
[ "$found" -ge "$expected" ] ||
  fail "journalctl -u jailgate holds access lines for $found of the $expected requests of step 3"
# README "Access log": Apache's combined format plus id=, script=, duration_ms=, exit=; one line
# of each front (loop 1 came through proxy_pass, loop 2 through fastcgi_pass).
for loop in 1 2; do
  line="$(grep -m 1 "hello?reload-$loop-" "$work/access-log")"
  log "e.g.: $line"
  [[ "$line" =~ \"GET\ /cgi-bin/hello\?reload-$loop-[0-9]+\ (HTTP/1\.[01]|FastCGI)\"\ 200\ [0-9]+\ .*id=[0-9]+\ script=/cgi-bin/hello\ duration_ms=[0-9]+\ exit=0 ]] ||
    fail "the access line is not in the README's format: $line"
done
log "$found access lines, one per request"

# ----------------------------------------------------------------------------------------------
step "5. upgrade to $NEW_VERSION under load"
conf=/etc/jailgate/jailgate.toml
edit="# edited by the fresh-Debian test before the upgrade to $NEW_VERSION"
echo "$edit" >> "$conf"
# A value too: the timeout, as the README's settings allow (the default is 30).
sed -i 's/^timeout = 30$/timeout = 29/' "$conf"
grep -qx 'timeout = 29' "$conf" || fail "$conf has no line 'timeout = 30' to edit"
pid_before="$(main_pid)"
load_start upgrade
load_wait_more upgrade 80 "before the upgrade"
# Apt unpacks, then the postinst restarts the service: 10 s leave it time even on a busy host.
slow_start upgrade 10
t=$(now)
# A conffile prompt (only if the package's own jailgate.toml changed) gets the answer a user's
# Enter gives: keep the edited file.
timeout 120 apt-get install -y "${apt_opts[@]}" -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$NEW_DEB" < /dev/null > "$work/apt-upgrade.log" 2>&1 ||
  { cat "$work/apt-upgrade.log"; fail "apt-get install $NEW_DEB failed (log above)"; }
log "upgraded in $(elapsed "$t") s, after $(load_count upgrade) requests"
grep -E "^(jailgate|Unpacking|Setting up|W:|E:)|Configuration file" "$work/apt-upgrade.log" || true
load_wait_more upgrade 200 "after the upgrade"
load_stop upgrade
slow_check upgrade "the upgrade's restart" 1
installed="$(dpkg-query -W -f '${Version}' jailgate)"
[ "$installed" = "$NEW_VERSION" ] || fail "dpkg lists jailgate $installed, not $NEW_VERSION"
grep -qxF "$edit" "$conf" || fail "the comment added to $conf is gone after the upgrade"
grep -qx 'timeout = 29' "$conf" || fail "the value changed in $conf is gone after the upgrade"
if ls "$conf".dpkg-* >/dev/null 2>&1; then log "note: dpkg left $(ls "$conf".dpkg-*)"; fi
pid_after="$(main_pid)"
[ "$pid_after" != 0 ] || fail "jailgate.service is not running after the upgrade and the load"
[ "$pid_after" != "$pid_before" ] ||
  fail "jailgate.service still runs as pid $pid_before: the upgrade did not restart it"
exe="$(readlink "/proc/$pid_after/exe")"
[ "$exe" = /usr/bin/gateway ] || fail "the service's main process runs '$exe', not the new /usr/bin/gateway"
stale="$(gateway_processes | grep '(deleted)' || true)"
[ -z "$stale" ] || { echo "$stale"; fail "processes still run the binaries the upgrade replaced (above)"; }
log "restarted: main pid $pid_before -> $pid_after, running $exe of jailgate $installed; no process runs a replaced binary"

# ----------------------------------------------------------------------------------------------
step "6. systemctl stop leaves no process"
slow_start stop 3
timeout 60 systemctl stop "${units[@]}" || fail "systemctl stop ${units[*]} failed or took over 60 s"
slow_check stop "systemctl stop" 2
for unit in "${units[@]}"; do
  state="$(systemctl is-active "$unit" || true)"
  [ "$state" = inactive ] || fail "$unit is '$state' after the stop"
done
# A drain that ended by itself: no SIGKILL from systemd after TimeoutStopSec, exit status 0.
result="$(systemctl show -p Result --value jailgate.service)"
[ "$result" = success ] || fail "jailgate.service stopped with result '$result', not success"
left="$(gateway_processes)"
[ -z "$left" ] || { echo "$left"; fail "processes of the gateway are left after the stop (above)"; }
log "no process runs /usr/bin/gateway or /usr/bin/jailgate-worker or has an id in $first_id-$last_id"

# ----------------------------------------------------------------------------------------------
step "7. purge leaves nothing"
# This test's own nginx configuration goes first, as a user removes what refers to a package
# before removing it; nginx then serves as before the test.
rm -f /etc/nginx/conf.d/proxy_pass.conf /etc/nginx/conf.d/fastcgi_pass.conf
timeout 30 systemctl reload nginx.service || fail "systemctl reload nginx failed"
timeout 120 apt-get purge -y "${apt_opts[@]}" jailgate < /dev/null > "$work/apt-purge.log" 2>&1 ||
  { cat "$work/apt-purge.log"; fail "apt-get purge jailgate failed (log above)"; }
grep -E '^(Removing|Purging|W:|E:)' "$work/apt-purge.log" || true
status="$(dpkg-query -W -f '${db:Status-Abbrev}' jailgate 2>/dev/null || true)"
[ -z "$status" ] || [ "$status" = "pn " ] || fail "dpkg still lists jailgate as '$status' after the purge"
for path in /var/lib/jailgate /etc/jailgate /run/jailgate /usr/bin/gateway /usr/bin/jailgate-worker /usr/share/doc/jailgate; do
  [ ! -e "$path" ] || fail "$path is left after the purge"
done
leftovers="$(find /etc/systemd /lib/systemd /usr/lib/systemd /var/lib/systemd /run/systemd -name '*jailgate*' \
  ! -name '*jailgate-debian-test*' 2>/dev/null || true)"
[ -z "$leftovers" ] || { echo "$leftovers"; fail "systemd files or enablement state of jailgate are left (above)"; }
load_state="$(systemctl show -p LoadState --value jailgate.service)"
[ "$load_state" = not-found ] || fail "systemd still knows jailgate.service (LoadState=$load_state)"
fs_listing > "$work/fs-after"
if ! diff "$work/fs-before" "$work/fs-after" > "$work/fs-diff"; then
  cat "$work/fs-diff"
  fail "the file system after the purge differs from before the install (diff above: < before, > after)"
fi
log "the file system is as before the install ($(wc -l < "$work/fs-after") paths compared)"
[ -z "$(gateway_processes)" ] || fail "processes of the gateway run after the purge"
