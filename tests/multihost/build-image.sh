#!/usr/bin/env bash
# Builds `llmbox:test` from the release image's deploy/Dockerfile (FROM scratch, only the static musl
# binary made by `make static`), so the multi-host suite runs what `make image` ships.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/x86_64-unknown-linux-musl/release/llmbox
[ -x "$bin" ] || { echo "build-image.sh: $bin missing; run make static first" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/llmbox"
cp deploy/Dockerfile "$ctx/Dockerfile"
docker build -q -t llmbox:test "$ctx" >/dev/null
echo "built llmbox:test ($(docker image inspect -f '{{.Size}}' llmbox:test) bytes)"
