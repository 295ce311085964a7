#!/usr/bin/env bash
# The benchmark, one command: installs wrk if missing, builds in release mode, prints the
# table (meshrpc vs tonic vs tarpc vs the loopback floor). `--quick` for a short run.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi
cargo run --release -q -p meshrpc-bench -- "$@"
