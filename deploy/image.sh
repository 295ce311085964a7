#!/usr/bin/env bash
# Builds the runtime image from a locally built binary, with no base image pulled (no
# registry needed): `FROM scratch` plus the `meshrpc` binary, the shared libraries it
# links (as `ldd` lists them), a passwd entry for the non-root user, and the same health
# check, stop signal and entry point as deploy/Dockerfile.
#   deploy/image.sh [TAG]          # default meshrpc:latest; builds the release binary first
#   MESHRPC_BIN=path deploy/image.sh   # use an existing binary
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-meshrpc:latest}"
bin="${MESHRPC_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release -q -p meshrpc-cli --bin meshrpc
  bin=target/release/meshrpc
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/root/usr/local/bin" "$ctx/root/etc" "$ctx/root/tmp"
cp "$bin" "$ctx/root/usr/local/bin/meshrpc"
strip "$ctx/root/usr/local/bin/meshrpc" 2>/dev/null || true
# The dynamic loader and every library the binary needs, at the paths it expects.
for lib in $(ldd "$bin" | grep -oE '/[^ ]+' | sort -u); do
  mkdir -p "$ctx/root$(dirname "$lib")"
  cp -L "$lib" "$ctx/root$lib"
done
echo "meshrpc:x:10001:10001::/tmp:/nonexistent" > "$ctx/root/etc/passwd"
echo "meshrpc:x:10001:" > "$ctx/root/etc/group"
chmod 1777 "$ctx/root/tmp"
cat > "$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY root/ /
USER 10001:10001
# Mesh port: TCP (calls and HTTP) and UDP (gossip); 11998 the admin port (probes,
# scrapers) when set. The gateway adds 8282.
EXPOSE 11999/tcp 11999/udp 11998/tcp 8282/tcp
ENV MESHRPC_LISTEN_ADDR=0.0.0.0:11999 RUST_LOG=info PATH=/usr/local/bin
# No curl in the image: the binary probes itself (the admin port when
# MESHRPC_ADMIN_ADDR is set, as with mutual TLS; else the mesh port).
HEALTHCHECK --interval=2s --timeout=2s --retries=3 CMD ["/usr/local/bin/meshrpc", "probe"]
# SIGTERM drains: the node announces it, callers move away, in-flight calls finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/meshrpc"]
CMD ["example", "greeter"]
EOF
docker build -q -t "$tag" "$ctx" >/dev/null
echo "built $tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MiB", $1/1048576}')"
