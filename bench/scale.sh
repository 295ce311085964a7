#!/usr/bin/env bash
# Membership at scale (issue 22): a gateway and 16, 32, 64, 128 greeter replicas, one
# size after the other, on this machine: convergence, then the idle cost of the mesh.
# Not part of the test suite (≈ 5 minutes). `bench/scale.sh 16 64` runs those sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -q -p meshrpc-cli -p meshrpc-bench
exec target/release/scale target/release/meshrpc "$@"
