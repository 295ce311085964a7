#!/usr/bin/env bash
# Fuzzes the wire: the frame decoder, both sides of the handshake, and request bodies in
# both codecs. Not part of the test run. `fuzz/run.sh [SECONDS]` runs each target that
# long (default 60) from the seed corpus in fuzz/corpus/ and prints how many inputs each
# tried. Needs the nightly toolchain; installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in frame_decode handshake args_decode; do
  mkdir -p "artifacts/$target"
  # A copy of the seeds: what the fuzzer adds stays out of the repo.
  work="$(mktemp -d)"
  cp "corpus/$target"/* "$work/"
  log="$(mktemp)"
  cargo +nightly fuzz run "$target" "$work" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || {
    tail -40 "$log"; echo "fuzz/run.sh: $target FAILED (the crashing input is under fuzz/artifacts/$target)"; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz/run.sh: $target: $runs inputs in ${secs} s, no failure"
  rm -rf "$work" "$log"
done
