#!/usr/bin/env bash
# The credentials the deploy files run with, in one command (docs/security.md):
#   deploy/secrets.sh [DIR] [TAG]        # default: deploy/secrets, cluster tag `example`
# It writes, with the `meshrpc` command (MESHRPC=path, else on PATH, else built here):
#   DIR/ca/           the cluster CA (ca.key: keep it off the nodes) and the gossip key
#   DIR/greeter/      the greeters' node certificate (may serve `greeter`) + gossip key
#   DIR/mesh-api/     the gateway's node certificate (serves nothing) + gossip key
#   DIR/cli/          the operators' caller-only identity (no gossip key): meshrpc status,
#                     call, split … --tls-dir DIR/cli
#   DIR/https/        the gateway's HTTPS certificate (localhost, 127.0.0.1, mesh-api),
#                     signed by the cluster CA: curl --cacert DIR/ca/ca.pem
#   DIR/policy.toml   who may call what and write which rules; every node reads it
#   DIR/api-keys      the gateway's API keys (`subject:token`); DIR/api-key the token alone
# Then: docker compose -f deploy/docker-compose.yml up (or docker stack deploy), or
# kubectl create secret … (deploy/k8s/meshrpc.yaml says which).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-$here/secrets}"
tag="${2:-example}"
meshrpc="${MESHRPC:-$(command -v meshrpc || true)}"
if [ -z "$meshrpc" ]; then
  (cd "$here/.." && cargo build --release -q -p meshrpc-cli --bin meshrpc)
  meshrpc="$here/../target/release/meshrpc"
fi
if [ -e "$dir/ca/ca.pem" ]; then
  echo "$dir/ca/ca.pem exists: not overwriting a CA (remove $dir to start over)" >&2
  exit 1
fi
mkdir -p "$dir"
"$meshrpc" ca init --dir "$dir/ca" --tag "$tag"
"$meshrpc" cert issue --ca "$dir/ca" --node greeter --service greeter --out "$dir/greeter"
"$meshrpc" cert issue --ca "$dir/ca" --node mesh-api --out "$dir/mesh-api"
"$meshrpc" cert issue --ca "$dir/ca" --caller cli --out "$dir/cli"
"$meshrpc" cert https --ca "$dir/ca" --name localhost --name 127.0.0.1 --name mesh-api --out "$dir/https"
token="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
(umask 077 && printf 'demo:%s\n' "$token" >"$dir/api-keys" && printf '%s\n' "$token" >"$dir/api-key")
cat >"$dir/policy.toml" <<'EOF'
# Who may call what, and write which rules (docs/security.md). Every node reads it.
# The gateway calls the greeters, proxies their HTTP routes and gathers their figures.
[[allow]]
from = "mesh-api"
to = ["greeter.*", "meshrpc.stats"]

# The API key's subject, vouched for by the gateway.
[[allow]]
from = "user:demo"
to = "greeter.*"

# Operators (`--tls-dir secrets/cli`): every method, and the split and mirror rules.
[[allow]]
from = "cli"
to = ["*", "rule:*"]
EOF
# The image runs as uid 10001, and Compose mounts secrets as they are on disk.
if [ "$(id -u)" = 0 ]; then
  chown -R 10001:10001 "$dir/greeter" "$dir/mesh-api" "$dir/https" "$dir/api-keys" "$dir/policy.toml"
  chown 10001:10001 "$dir/ca/ca.pem" "$dir/ca/gossip.key"
else
  echo "note: not root, so the node keys stay readable by you only; Compose then needs" \
    "them readable by uid 10001 (chown, or run this as root). Swarm and Kubernetes set it themselves." >&2
fi
echo "credentials for cluster \`$tag\` in $dir (API token: $dir/api-key)"
