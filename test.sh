#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests drive (curl, wrk, script, ip, python3,
# npm, promtool; from PyPI openapi-spec-validator, openapi-python-client,
# prometheus-client, grpcio and grpcio-tools, and from npm typescript, under target/)
# when missing. As root, the
# multi-host fault tests (network namespaces) run too; otherwise they say they skipped.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# promtool checks every /metrics format (Debian's `prometheus` package provides it).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# Installs Debian packages: `apt_install WHY PACKAGE...`.
apt_install() {
  local why="$1"; shift
  echo "test.sh: installing $* $why (Debian packages)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
if ((${#missing[@]})); then apt_install "" "${missing[@]}"; fi

# `--heavy` (CI passes it) adds the heavy tier: Docker (Swarm, Compose), a browser,
# Prometheus, the 64-node scale scenario, soaks. Tests of that tier run only when MESHRPC_HEAVY is set.
args=()
for a in "$@"; do
  if [ "$a" = "--heavy" ]; then export MESHRPC_HEAVY=1; else args+=("$a"); fi
done
set -- "${args[@]+"${args[@]}"}"
if [ -n "${MESHRPC_HEAVY:-}" ]; then
  heavy_missing=()
  command -v chromium >/dev/null 2>&1 || heavy_missing+=(chromium)
  command -v prometheus >/dev/null 2>&1 || heavy_missing+=(prometheus)
  # Docker and Compose, as root only (the Docker tests start dockerd themselves).
  if [ "$(id -u)" = 0 ]; then
    command -v dockerd >/dev/null 2>&1 || heavy_missing+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || heavy_missing+=(docker-compose)
  fi
  if ((${#heavy_missing[@]})); then apt_install "for the heavy tier" "${heavy_missing[@]}"; fi
fi

# Python tools from PyPI (the OpenAPI and Kubernetes validators, a client generator from
# OpenAPI, Prometheus' own parsers, grpcio and its protoc), in a venv of the build's own.
py="target/py"
if ! "$py/bin/python" -c "import openapi_spec_validator, jsonschema, kubernetes_validate, openapi_python_client, prometheus_client, grpc, grpc_tools" >/dev/null 2>&1; then
  echo "test.sh: installing openapi-spec-validator, kubernetes-validate, openapi-python-client, prometheus-client, grpcio and grpcio-tools (PyPI) into $py"
  python3 -m venv "$py"
  "$py/bin/pip" install -q openapi-spec-validator kubernetes-validate openapi-python-client prometheus-client grpcio grpcio-tools
fi
export MESHRPC_PYTHON="$PWD/$py/bin/python"

# TypeScript's compiler (npm), to check the generated types.
if ! [ -x target/node/node_modules/.bin/tsc ]; then
  echo "test.sh: installing typescript (npm) into target/node"
  npm install --silent --no-audit --no-fund --prefix target/node typescript@5 >/dev/null
fi
export MESHRPC_TSC="$PWD/target/node/node_modules/.bin/tsc"

export MESHRPC_REQUIRE_TOOLS=1
[ "$(id -u)" = 0 ] && export MESHRPC_REQUIRE_NETNS=1
# The bench is not a test: it builds under clippy in CI and runs with bench/run.sh.
# Every test binary runs even when one fails, so a red run shows all that failed.
status=0
cargo test --workspace --exclude meshrpc-bench --no-fail-fast "$@" || status=$?
# The simulation (sim/), in a build of its own (--cfg tokio_unstable, target/sim): one
# seed gives one run, an injected bug is caught, a fixed sweep of seeds passes. The heavy
# tier sweeps 1,000 seeds of 8 to 32 nodes, two processes at once.
if [ $# -eq 0 ]; then
  sim/run.sh --test || status=$?
  if [ -n "${MESHRPC_HEAVY:-}" ]; then
    mkdir -p target
    sim/run.sh --seeds 1..500 --nodes 8..32 > target/sim-sweep-1.log 2>&1 & first=$!
    sim/run.sh --seeds 501..1000 --nodes 8..32 > target/sim-sweep-2.log 2>&1 & second=$!
    wait $first || status=$?
    wait $second || status=$?
    grep -hE "FAILED|^  |seeds (passed|failed)" target/sim-sweep-1.log target/sim-sweep-2.log || true
  fi
fi
exit $status
