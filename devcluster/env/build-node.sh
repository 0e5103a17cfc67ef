#!/usr/bin/env bash
# Build kubelet and kube-scheduler from the control plane's wrapper module (same
# k8s.io/kubernetes version, same replace lines, same build cache) into the same
# cache directory; then the pod sandbox ("pause") image from devcluster/env/pause.
# Needs build-control-plane.sh to have run first (it writes the wrapper's go.mod).
# Idempotent: finished outputs are reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
CACHE="${TROP_CACHE:-/var/cache/traceroute-operator}"
OUT="$CACHE/k8s-$K8S_VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}" GOCACHE="${GOCACHE_DIR:-$CACHE/gobuild}"
export GOFLAGS="-buildvcs=false -mod=mod"

if [[ -x "$OUT/bin/kubelet" && -x "$OUT/bin/kube-scheduler" && -f "$OUT/.node-done" ]]; then
  echo "kubelet, kube-scheduler $K8S_VERSION cached in $OUT"
else
  [[ -f "$OUT/src/go.mod" ]] || { echo "run build-control-plane.sh first ($OUT/src/go.mod missing)" >&2; exit 1; }
  src="$OUT/node-src"
  mkdir -p "$src"
  # the same module requirements and replaces as the control plane: one version everywhere
  cp "$OUT/src/go.mod" "$src/go.mod"
  [[ -f "$OUT/src/go.sum" ]] && cp "$OUT/src/go.sum" "$src/go.sum"
  cat > "$src/tools.go" <<'GO'
//go:build tools

package k8sbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  cd "$src"
  go mod tidy -e >/dev/null 2>&1 || true
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  vpkg=k8s.io/component-base/version
  ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
  echo "building kubelet and kube-scheduler $K8S_VERSION (warm control-plane cache: ~1-3 min)"
  time go build -trimpath -ldflags "$ldflags" -o "$OUT/bin/kubelet" k8s.io/kubernetes/cmd/kubelet
  time go build -trimpath -ldflags "$ldflags" -o "$OUT/bin/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler
  "$OUT/bin/kubelet" --version
  touch "$OUT/.node-done"
fi

# The sandbox image: nothing can be pulled from a public registry, so the pause
# process is built here and committed into an image with nothing else in it.
images="$CACHE/images"
pause_sum="$(sha256sum "$here/pause/main.go" | cut -c1-12)"
pause_tar="$images/pause-$pause_sum.oci.tar"
if [[ -f "$pause_tar" ]]; then
  echo "pause image cached in $pause_tar"
  exit 0
fi
mkdir -p "$images"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && cp "$here/pause/main.go" . && go mod init trop.local/pause >/dev/null 2>&1 \
  && go build -trimpath -ldflags "-s -w" -o pause .)
source "$here/buildah-env.sh"
ctr="$(buildah_cmd from scratch)"
buildah_cmd copy --chmod 0755 "$ctr" "$work/pause" /pause >/dev/null
buildah_cmd config --entrypoint '["/pause"]' --user 65535:65535 \
  --label org.opencontainers.image.title=pause "$ctr"
buildah_cmd commit --rm --format oci "$ctr" "oci-archive:$pause_tar.tmp:localhost/pause:1" >/dev/null
mv "$pause_tar.tmp" "$pause_tar"
ln -sfn "$(basename "$pause_tar")" "$images/pause.oci.tar"
echo "pause image built: $pause_tar"
