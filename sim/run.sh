#!/usr/bin/env bash
# Runs simulations of a whole mesh, one per seed (sim/: turmoil's network and clock):
#   sim/run.sh [--seeds FROM..TO | --seed S] [--nodes N | --nodes A..B] [--log]
#   sim/run.sh --test     the simulation's own tests (same seed, same log; an injected bug is caught)
# A failing seed prints the command that replays it. Built with `--cfg tokio_unstable`, so
# that turmoil seeds tokio's own random choices (one seed, one run), in a target dir of
# its own (target/sim) so that the workspace's build is not rebuilt each time.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} --cfg tokio_unstable"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/sim"
if [ "${1:-}" = "--test" ]; then
  shift
  exec cargo test --release -p meshrpc-sim "$@"
fi
cargo build -q --release -p meshrpc-sim
exec "$CARGO_TARGET_DIR/release/meshrpc-sim" "$@"
