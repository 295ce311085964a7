#!/usr/bin/env bash
# Membership of 100 … 1,000 nodes, simulated in one process (issue 22). Not part of the
# test suite (a few minutes). `bench/gossip-sim.sh 100 250` runs those sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p meshrpc-gossip-sim
exec target/release/meshrpc-gossip-sim "$@"
