#!/usr/bin/env bash
# The fresh-Debian test (issue 15, part 3, and the upgrade of part 5): builds the Debian
# package (and a "newer" one of the same binaries), makes a minimal Debian 12 root file system
# with mmdebstrap, boots it with systemd-nspawn, and checks from inside the booted system what
# a user would see: install, socket activation, nginx in front with the shipped examples,
# reload and upgrade under load with no request lost, the access log in the journal, stop
# leaving no process, purge leaving nothing. The checks themselves are
# scripts/debian-test-check.sh, which runs as a oneshot unit once the container reached
# multi-user.target, writes its log and exit status to a folder of this host, and powers the
# container off.
#
#   scripts/debian-test.sh [--bin-dir DIR]     (default target/debug, as scripts/test.sh builds)
#
# Environment:
#   BUILD_DEB=PATH           the package builder (default scripts/build-deb.sh)
#   DEBIAN_TEST_MIRROR=URL   the Debian mirror (default mmdebstrap's: deb.debian.org)
#   DEBIAN_TEST_KEEP=DIR     keep the root file system, the packages and the logs in DIR
#                            (must not exist yet) instead of removing them; boot it again with
#                            `systemd-nspawn -b -D DIR/root --register=no --keep-unit`
#
# Run as root on Debian 12 with mmdebstrap and systemd-nspawn (package systemd-container);
# systemd need not be PID 1 here. Nothing is cached between runs: every run bootstraps afresh.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=target/debug
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    *) echo "usage: scripts/debian-test.sh [--bin-dir DIR]" >&2; exit 2 ;;
  esac
done
BUILD_DEB=${BUILD_DEB:-scripts/build-deb.sh}
suite=bookworm
# Bounds of each host-side step (seconds); the whole test aims at under 5 minutes.
build_timeout=180
bootstrap_timeout=150
boot_timeout=240

say() { printf 'debian-test: %s\n' "$*"; }
fail() { printf 'debian-test: FAILED: %s\n' "$*" >&2; exit 1; }

# --- what this host must have ----------------------------------------------------------------
[ "$(id -u)" = 0 ] || fail "preflight: run as root (mmdebstrap builds a root file system, systemd-nspawn boots it)"
for tool in mmdebstrap systemd-nspawn dpkg-deb timeout tail; do
  command -v "$tool" >/dev/null ||
    fail "preflight: '$tool' is missing (apt-get install --no-install-recommends mmdebstrap systemd-container)"
done
[ -x "$BUILD_DEB" ] || fail "preflight: the package builder '$BUILD_DEB' is missing or not executable (BUILD_DEB=...)"
{ [ -x "$bin_dir/gateway" ] && [ -x "$bin_dir/jailgate-worker" ]; } ||
  fail "preflight: no gateway and jailgate-worker in '$bin_dir' (cargo build --workspace --bins)"
# Absolute: the builder may run from another folder.
bin_dir="$(realpath "$bin_dir")"
# systemd in the container needs a cgroup file system to manage its services.
{ [ -d /sys/fs/cgroup ] && [ -n "$(ls -A /sys/fs/cgroup)" ]; } ||
  fail "preflight: no cgroup file system mounted at /sys/fs/cgroup: systemd cannot boot in a container here"
# The gateway gives every worker a user namespace of its own, inside the container's.
if [ -r /proc/sys/user/max_user_namespaces ] && [ "$(cat /proc/sys/user/max_user_namespaces)" = 0 ]; then
  fail "preflight: user namespaces are disabled (user.max_user_namespaces = 0): the gateway's workers need them"
fi

t_start=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }
times=()

# --- the temporary folder, and its cleanup on every exit path --------------------------------
keep="${DEBIAN_TEST_KEEP:-}"
if [ -n "$keep" ]; then
  [ ! -e "$keep" ] || fail "preflight: DEBIAN_TEST_KEEP=$keep exists already; name a new folder"
  mkdir -p "$keep"
  work="$(realpath "$keep")"
else
  work="$(mktemp -d /var/tmp/jailgate-debian-test.XXXXXX)"
fi
root="$work/root"
results="$work/results"
debs="$work/debs"
mkdir -p "$results" "$debs"
machine="jailgate-test-$$"
nspawn_pid=""
# nspawn makes /run/systemd/nspawn on the host for its locks: removed afterwards if it was not
# there before this run.
nspawn_state_existed=no
[ -e /run/systemd/nspawn ] && nspawn_state_existed=yes

# Long steps run in the background, waited for: a signal to this script then runs the trap at
# once instead of after the step, and the trap stops the step by its pid.
child_pid=""
bounded() { # SECONDS COMMAND...: runs COMMAND under timeout; its status
  timeout "$@" &
  child_pid=$!
  local status=0
  wait "$child_pid" || status=$?
  child_pid=""
  return "$status"
}

# The script's own stdout, for the cleanup's messages: a signal may come while a step's output
# goes to a file.
exec 3>&1
cleanup() {
  local status=$?
  exec 1>&3
  if [ -n "$child_pid" ] && kill -0 "$child_pid" 2>/dev/null; then
    # timeout passes the signal on to its command (mmdebstrap then unmounts what it mounted).
    kill -TERM "$child_pid" 2>/dev/null || true
    wait "$child_pid" 2>/dev/null || true
  fi
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    # SIGTERM: nspawn asks the container's systemd to power off; SIGKILL if it does not within
    # 20 s, which ends the container's PID namespace and so every process in it.
    say "stopping the container (nspawn pid $nspawn_pid)"
    kill -TERM "$nspawn_pid" 2>/dev/null || true
    timeout 20 tail --pid="$nspawn_pid" -f /dev/null || kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  # Nothing may stay mounted below the folder (mmdebstrap mounts /proc, /sys, /dev in the root
  # while it works and unmounts them itself; this is for when it was killed), and
  # --one-file-system keeps rm inside the folder's own file system whatever happens.
  if [ -d "$work" ]; then
    findmnt -rn -o TARGET | awk -v w="$work/" 'index($0, w) == 1' | sort -r |
      while read -r mountpoint; do umount -l "$mountpoint" 2>/dev/null || true; done
  fi
  if [ -n "$keep" ]; then
    say "kept the root file system, packages and logs in $work"
  else
    rm -rf --one-file-system "$work"
  fi
  # Only its empty folders: another nspawn may be running.
  [ "$nspawn_state_existed" = yes ] || find /run/systemd/nspawn -depth -type d -empty -delete 2>/dev/null || true
  say "$([ "$status" = 0 ] && echo passed || echo failed) in $(elapsed "$t_start") s in all (cleanup included)"
  exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted (SIGINT)"; exit 130' INT
trap 'say "interrupted (SIGTERM)"; exit 143' TERM

# --- 1. the packages -------------------------------------------------------------------------
t=$(date +%s.%N)
say "building the package with $BUILD_DEB --bin-dir $bin_dir"
bounded "$build_timeout" "$BUILD_DEB" --bin-dir "$bin_dir" --out "$debs/base" > "$debs/base.path" ||
  fail "build: $BUILD_DEB --bin-dir $bin_dir failed or took over $build_timeout s (its messages are above)"
deb="$(cat "$debs/base.path")"
[ -f "$deb" ] || fail "build: $BUILD_DEB printed '$deb', which is no file"
version="$(dpkg-deb -f "$deb" Version)"
new_version="$version+up1"
# The upgrade: the same binaries packaged as a newer version, which dpkg must unpack over the
# running service and whose maintainer scripts must restart it.
bounded "$build_timeout" "$BUILD_DEB" --bin-dir "$bin_dir" --version "$new_version" --out "$debs/new" > "$debs/new.path" ||
  fail "build: $BUILD_DEB --version $new_version failed or took over $build_timeout s (its messages are above)"
new_deb="$(cat "$debs/new.path")"
[ -f "$new_deb" ] || fail "build: $BUILD_DEB printed '$new_deb', which is no file"
dpkg --compare-versions "$new_version" gt "$version" || fail "build: $new_version does not sort after $version"
[ "$(dpkg-deb -f "$new_deb" Version)" = "$new_version" ] ||
  fail "build: $new_deb has version $(dpkg-deb -f "$new_deb" Version), not $new_version"
say "packages: $(basename "$deb"), $(basename "$new_deb")"
# The package's dependencies go into the root now: the booted system installs the package from
# its file with no network (the container has none) and no package lists, as a user with a
# Debian that already has them would. First alternative of each, without version constraints.
deps="$(for field in Pre-Depends Depends Recommends; do dpkg-deb -f "$deb" "$field"; echo; done |
  tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/[[:space:]]//g' | { grep -v '^$' || true; } | sort -u | paste -sd, -)"
times+=("build the two packages: $(elapsed "$t") s")

# --- 2. the root file system -----------------------------------------------------------------
t=$(date +%s.%N)
# systemd and dbus to boot; nginx and curl for the checks; the package's dependencies.
include="systemd,systemd-sysv,dbus,nginx-light,curl${deps:+,$deps}"
say "bootstrapping Debian $suite (minbase + $include)"
mirror_args=()
[ -z "${DEBIAN_TEST_MIRROR:-}" ] || mirror_args=("$DEBIAN_TEST_MIRROR")
bootstrap() {
  bounded "$bootstrap_timeout" mmdebstrap --variant=minbase --include="$include" \
    "$suite" "$root" "${mirror_args[@]}" > "$work/mmdebstrap.log" 2>&1
}
# One more try on failure: what fails here is mostly the network or the mirror.
if ! bootstrap; then
  tail -n 20 "$work/mmdebstrap.log" >&2
  say "mmdebstrap failed (log above); trying once more"
  rm -rf --one-file-system "$root"
  bootstrap || { cat "$work/mmdebstrap.log" >&2; fail "bootstrap: mmdebstrap failed twice or took over $bootstrap_timeout s (log above)"; }
fi
times+=("bootstrap Debian $suite: $(elapsed "$t") s")

# What the booted system needs for the checks: the packages, the check script, and the unit
# that runs it once the system is up.
mkdir -p "$root/debian-test"
cp "$deb" "$new_deb" scripts/debian-test-check.sh "$root/debian-test/"
cat > "$root/debian-test/env" <<EOF
DEB=/debian-test/$(basename "$deb")
VERSION=$version
NEW_DEB=/debian-test/$(basename "$new_deb")
NEW_VERSION=$new_version
EOF
cat > "$root/etc/systemd/system/jailgate-debian-test.service" <<'EOF'
[Unit]
Description=Jailgate's fresh-Debian checks
After=multi-user.target nginx.service

[Service]
Type=oneshot
EnvironmentFile=/debian-test/env
ExecStart=/bin/bash /debian-test/debian-test-check.sh
# The checks bound their own waits; this bounds them all. Power off whatever the outcome, so
# the host's wait ends as soon as the checks do.
TimeoutStartSec=200
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=append:/results/log
StandardError=append:/results/log

[Install]
WantedBy=multi-user.target
EOF
ln -s /etc/systemd/system/jailgate-debian-test.service \
  "$root/etc/systemd/system/multi-user.target.wants/jailgate-debian-test.service"
echo "$machine" > "$root/etc/hostname"

# --- 3. boot, and wait for the checks ---------------------------------------------------------
t=$(date +%s.%N)
say "booting the container ($machine); the checks' log follows"
: > "$results/log"
# --register=no and --keep-unit: this host has no systemd as PID 1 (no machined, no scopes).
# --private-network: the container's nginx and sockets cannot collide with this host's, and
# nothing inside needs the network. nspawn's read-only /proc/sys stays: the service sees
# the same under its own ProtectKernelTunables=yes on any machine.
systemd-nspawn --boot --directory="$root" --machine="$machine" \
  --register=no --keep-unit --private-network --console=pipe \
  --bind="$results:/results" < /dev/null > "$work/console.log" 2>&1 &
nspawn_pid=$!
# The log as it grows, until the container is gone (or the bound is reached).
bounded "$boot_timeout" tail -n +1 --pid="$nspawn_pid" -f "$results/log" || true
if kill -0 "$nspawn_pid" 2>/dev/null; then
  tail -n 30 "$work/console.log" >&2
  fail "boot: the container did not power off within $boot_timeout s (console above)"
fi
nspawn_status=0
wait "$nspawn_pid" || nspawn_status=$?
nspawn_pid=""
times+=("boot, checks, power-off: $(elapsed "$t") s")

# --- 4. the verdict ---------------------------------------------------------------------------
say "times on the host:"
printf '  %s\n' "${times[@]}" "so far: $(elapsed "$t_start") s (then the cleanup)"
if [ ! -s "$results/status" ]; then
  say "container console (last 40 lines):"
  tail -n 40 "$work/console.log"
  fail "boot: the checks never finished (no status written; nspawn exited with $nspawn_status)"
fi
check_status="$(cat "$results/status")"
[ "$check_status" = 0 ] ||
  fail "$(grep -m 1 -o 'FAILED in step.*' "$results/log" || echo "the checks inside the container failed with $check_status (log above)")"
[ "$nspawn_status" = 0 ] || fail "boot: systemd-nspawn exited with $nspawn_status after the checks passed"
