#!/usr/bin/env bash
# The multi-host fault scenarios alone (each node in its own network namespace), with
# their figures printed. Needs root and iproute2. `./test.sh` runs them too.
set -euo pipefail
cd "$(dirname "$0")/.."
export MESHRPC_REQUIRE_NETNS=1
cargo test -p meshrpc-tests --test netns -- --nocapture --test-threads 1
