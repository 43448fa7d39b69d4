#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need on a fresh Debian
# machine, checks format and lints, builds every binary once, and runs every test.
# Must run as root: the end-to-end tests build real jails and start real workers.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (the tests build chroot jails and namespaces)" >&2
  exit 2
fi

# What the tests need beyond the Rust toolchain; installed only when missing.
need=()
# gcc and libc6-dev: the escape tests build static attack programs; busybox-static: the
# busybox profile's one static binary; nginx: the tests that put nginx in front; git: its
# git-http-backend is the Debian-packaged CGI the real-world tests run; python3-prometheus-client:
# the OpenMetrics parser that reads /metrics in the tests; wrk and curl: the soak's load and probe.
for package in gcc libc6-dev busybox-static nginx-light git python3-prometheus-client wrk curl; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
# Debian's `nobody` and `daemon`: the tests use them as other services' accounts (a local user
# that is no front server, a socket group, names that resolve); the gateway itself runs as ids
# of its own, which need no account.
for account in nobody daemon; do
  getent passwd "$account" >/dev/null || { echo "no '$account' user on this machine" >&2; exit 2; }
done
# mmdebstrap and systemd-nspawn (systemd-container): the fresh-Debian test at the end builds a
# Debian 12 root and boots it. Without their recommends: libnss-mymachines would rewrite this
# host's nsswitch.conf, and the test needs none of the others.
need_norecommends=()
for package in mmdebstrap systemd-container; do
  dpkg -s "$package" >/dev/null 2>&1 || need_norecommends+=("$package")
done
if [ ${#need[@]} -gt 0 ] || [ ${#need_norecommends[@]} -gt 0 ]; then
  # Packages with services (nginx) must not start them: the tests start their own, by pid.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
  if [ ${#need_norecommends[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_norecommends[@]}"
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests start the real binaries: build them first (the tests crate cannot ask
# cargo for another package's binary), then run every test of the workspace in one go.
cargo build --workspace --bins --locked
cargo test --workspace --locked
# A short soak (bench/soak.sh runs it for as long as asked): a mixed load against the debug
# build, failing on any unexplained error, descriptor or memory growth, zombie or leftover.
bench/soak.sh 30 --bin-dir target/debug
# The fuzz targets (fuzz/): 30 s each from the committed corpus, failing on any crash.
scripts/fuzz.sh 30
# The Debian package on a fresh Debian 12, booted (scripts/debian-test.sh): install, socket
# activation, nginx in front, reload and upgrade under load, stop, purge. Under 5 minutes.
scripts/debian-test.sh --bin-dir target/debug
