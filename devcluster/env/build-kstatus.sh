#!/usr/bin/env bash
# Build devcluster/env/kstatus (kstatus of one object on stdin, computed by the real
# sigs.k8s.io/cli-utils library) into the cache, keyed by a hash of its sources, so
# every checkout finds the binary built from its own go.mod/go.sum/main.go.
# Idempotent: a finished build is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/kstatus"
CACHE="${TROP_CACHE:-/var/cache/traceroute-operator}"
# devcluster/kstatus.py computes the same key
key="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)"
OUT="$CACHE/kstatus-$key"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}" GOCACHE="${GOCACHE_DIR:-$CACHE/gobuild}"
# go.sum is committed: the build must not change the module graph
export GOFLAGS="-buildvcs=false -mod=readonly"

if [[ -x "$OUT/kstatus" && -f "$OUT/.done" ]]; then
  echo "kstatus helper cached in $OUT"
  exit 0
fi
mkdir -p "$OUT"
cd "$src"
go build -trimpath -ldflags "-s -w" -o "$OUT/kstatus" .
chmod 755 "$OUT" "$OUT/kstatus"
touch "$OUT/.done"
echo "kstatus helper built in $OUT"
