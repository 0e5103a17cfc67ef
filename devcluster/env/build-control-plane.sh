#!/usr/bin/env bash
# Build etcd, kube-apiserver and kube-controller-manager from their Go modules
# (no registry ships them) into a cache outside the checkout, keyed by version.
# Idempotent: a finished build is reused; a half-finished one is redone.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
CACHE="${TROP_CACHE:-/var/cache/traceroute-operator}"
OUT="$CACHE/k8s-$K8S_VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}" GOCACHE="${GOCACHE_DIR:-$CACHE/gobuild}"
export GOFLAGS="-buildvcs=false -mod=mod"

if [[ -x "$OUT/bin/kube-apiserver" && -x "$OUT/bin/kube-controller-manager" && -x "$OUT/bin/etcd" && -f "$OUT/.done" ]]; then
  echo "control plane $K8S_VERSION cached in $OUT"
  exit 0
fi
mkdir -p "$OUT/bin" "$OUT/src"
cd "$OUT/src"

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
patch="${K8S_VERSION##*.}"
staging="v0.$minor.$patch"

# The release's own go.mod tells which staging modules it maps to ./staging and
# which etcd it was tested with; both change between releases.
go mod download -json "k8s.io/kubernetes@$K8S_VERSION" > k8s.json
k8s_gomod="$(python3 -c 'import json,sys; print(json.load(open("k8s.json"))["GoMod"])')"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$k8s_gomod")"
go_line="$(grep -m1 '^go ' "$k8s_gomod")"
godebug_line="$(grep -m1 '^godebug' "$k8s_gomod" || true)"

{
  echo "module trop.local/k8sbuild"
  echo
  echo "$go_line"
  [[ -n "$godebug_line" ]] && echo "$godebug_line"
  echo
  echo "require ("
  echo "  k8s.io/kubernetes $K8S_VERSION"
  echo "  go.etcd.io/etcd/server/v3 $etcd_version"
  echo ")"
  echo
  echo "replace ("
  sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#\1#p' "$k8s_gomod" | while read -r mod; do
    echo "  $mod => $mod $staging"
  done
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package k8sbuild

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
# Staging modules that were never published at this version and are not
# needed by these binaries would make `go mod tidy` fail: drop those replaces.
for mod in $(sed -n 's#^  \(k8s.io/[^ ]*\) => .*#\1#p' go.mod); do
  if ! go mod download "$mod@$staging" >/dev/null 2>&1; then
    echo "note: $mod@$staging not published, dropping its replace"
    sed -i "\#^  $mod => #d" go.mod
  fi
done
go mod tidy -e >/dev/null 2>&1 || true

vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
echo "building kube-apiserver, kube-controller-manager $K8S_VERSION and etcd $etcd_version (cold: ~15-25 min on 2 cores)"
time go build -trimpath -ldflags "$ldflags" -o "$OUT/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
time go build -trimpath -ldflags "$ldflags" -o "$OUT/bin/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
time go build -trimpath -ldflags "-s -w" -o "$OUT/bin/etcd" go.etcd.io/etcd/server/v3
"$OUT/bin/kube-apiserver" --version
"$OUT/bin/etcd" --version | head -1
touch "$OUT/.done"
