#!/usr/bin/env bash
# The front door under load (issues 21, 34): `meshrpc gateway` next to nginx's static 200
# and nginx as a reverse proxy in front of a replica, in
# one run. Installs nginx and wrk when missing, builds release binaries, prints the
# memory table and the concurrency curve (100 … 15,000 connections). Takes ~10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# 15,000 connections need as many descriptors on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -q -p meshrpc-cli -p meshrpc-bench
exec target/release/front-door target/release/meshrpc
