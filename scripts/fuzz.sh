#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (fuzz/README.md says what each target checks):
# installs cargo-fuzz (and a C++ compiler for libFuzzer) when missing, builds every target
# once, runs each for SECONDS_PER_TARGET seconds (default 60), and exits non-zero if any
# target crashed (a panic, a sanitizer report, a hang or running out of memory). Crashing inputs are kept in fuzz/artifacts/<target>/; new inputs found
# along the way go to fuzz/target/corpus/<target>/ (both gitignored), never into the
# committed seeds in fuzz/corpus/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]  (a whole number of seconds, at least 1)" >&2
  exit 2
fi

# libFuzzer itself is C++, built by the libfuzzer-sys crate.
if ! command -v c++ >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/fuzz.sh: needs a C++ compiler (apt-get install g++), or run as root" >&2
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, coverage instrumentation);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Only for the cargo-fuzz commands:
# it must not leak into the main workspace's builds.
fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }

# The fuzz workspace has its own Cargo.lock, committed. A dependency added to the main
# workspace makes cargo add it there too (nothing else moves): say so, rather than fail.
lock_before=$(cksum < fuzz/Cargo.lock)
# Built once, with cargo-fuzz's defaults (optimized, debug assertions, AddressSanitizer);
# then the binaries are run as they are.
fuzz build
if [ "$(cksum < fuzz/Cargo.lock)" != "$lock_before" ]; then
  echo "fuzz: fuzz/Cargo.lock was out of date and has been updated: commit it" >&2
fi
host=$(rustc -vV | sed -n 's/^host: //p')
bin="fuzz/target/$host/release"
# As cargo fuzz run sets it: Rust code gives false ODR-violation reports.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

logs=fuzz/target/logs
mkdir -p "$logs"
failed=()
for target in $(fuzz list); do
  # The first corpus folder is where libFuzzer writes what it finds; the seeds stay as they are.
  found="fuzz/target/corpus/$target"
  mkdir -p "$found" "fuzz/artifacts/$target"
  log="$logs/$target.log"
  # A dictionary of the format's tokens, if the target (or its family: fastcgi_*) has one.
  dict=()
  for file in "fuzz/dict/$target.dict" "fuzz/dict/${target%%_*}.dict"; do
    if [ -f "$file" ]; then
      dict=("-dict=$file")
      break
    fi
  done
  echo "fuzz: $target for ${seconds}s"
  # -timeout: one input running this long is a hang (a stuck FastCGI connection is caught
  # sooner by its target, on a paused clock).
  if "$bin/$target" -artifact_prefix="fuzz/artifacts/$target/" -max_total_time="$seconds" \
    -timeout=10 -print_final_stats=1 "${dict[@]}" "$found" "fuzz/corpus/$target" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    echo "fuzz: $target ok: ${runs:-?} runs, ${rate:-?} exec/s"
  else
    echo "fuzz: $target FAILED (log: $log)" >&2
    tail -n 40 "$log" >&2
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}; the inputs that crashed (or hung, or ran out of memory)" \
    "are in fuzz/artifacts/TARGET/; replay one with" \
    "RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/FILE" >&2
  exit 1
fi
echo "fuzz: all targets ran ${seconds}s without a crash"
