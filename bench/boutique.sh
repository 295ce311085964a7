#!/usr/bin/env bash
# Online Boutique, the whole application: meshrpc in one process, one process per service
# and three groups, against the same call graph on tonic (one process per service), at the
# same offered load; p50/p99 per request type, CPU-seconds per 1,000 requests, ratios to
# tonic. `--rate 300 --seconds 10 --passes 3` are the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p boutique -p boutique-tonic
python3 bench/boutique.py "$@"
