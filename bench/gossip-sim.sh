#!/usr/bin/env bash
# Membership of 100 … 3,000 nodes, simulated in one process: meshrpc's gossip beside
# chitchat (0.1.0's; up to 1,000 nodes, its ceiling) in one run (issues 22, 35). Not part
# of the test suite (≈ 40 minutes). `bench/gossip-sim.sh 100 1000` runs those sizes;
# `--model=swim` or `--model=chitchat` one model.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p meshrpc-gossip-sim
exec target/release/meshrpc-gossip-sim "$@"
