#!/usr/bin/env bash
# Generate the real prometheus-operator CRDs (ServiceMonitor, PrometheusRule, ...)
# with controller-gen from the prometheus-operator `pkg/apis/monitoring` Go module,
# so the test control plane validates the operator's monitoring objects exactly as
# a cluster with kube-prometheus-stack would. No registry ships the YAML itself.
# Idempotent, cached outside the checkout, keyed by both versions.
set -euo pipefail

PROM_OPERATOR_VERSION="${PROM_OPERATOR_VERSION:-v0.95.1}"
CONTROLLER_TOOLS_VERSION="${CONTROLLER_TOOLS_VERSION:-v0.23.0}"
CACHE="${TROP_CACHE:-/var/cache/traceroute-operator}"
# devcluster/monitoring_crds.py crd_dir() builds the same name
OUT="$CACHE/prometheus-operator-crds-$PROM_OPERATOR_VERSION-controller-tools-$CONTROLLER_TOOLS_VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}" GOCACHE="${GOCACHE_DIR:-$CACHE/gobuild}"
export GOFLAGS="-buildvcs=false -mod=mod"

wanted=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_podmonitors.yaml
  monitoring.coreos.com_prometheusrules.yaml)
if [[ -f "$OUT/.done" ]]; then
  echo "prometheus-operator CRDs $PROM_OPERATOR_VERSION cached in $OUT"
  exit 0
fi
rm -rf "$OUT/crds" "$OUT/src"
mkdir -p "$OUT/bin" "$OUT/crds" "$OUT/src"

# controller-gen has no replace directives: build it from its own module so the
# monitoring module's requirements cannot move its dependencies.
if [[ ! -x "$OUT/bin/controller-gen" ]]; then
  echo "building controller-gen $CONTROLLER_TOOLS_VERSION"
  GOBIN="$OUT/bin" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
fi

# controller-gen loads packages through the go command, so run it inside a small
# module that requires the pinned monitoring module.
cd "$OUT/src"
monitoring=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
go_line="$(grep -m1 '^go ' "$(go mod download -json "$monitoring@$PROM_OPERATOR_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')")"
cat > go.mod <<EOF
module trop.local/promcrds

$go_line

require $monitoring $PROM_OPERATOR_VERSION
EOF
cat > tools.go <<'GO'
//go:build tools

package promcrds

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
GO
go mod tidy -e >/dev/null 2>&1 || go mod download all

"$OUT/bin/controller-gen" crd:crdVersions=v1 "paths=$monitoring/v1" "output:crd:dir=$OUT/crds"
for f in "${wanted[@]}"; do
  [[ -s "$OUT/crds/$f" ]] || { echo "controller-gen did not produce $f" >&2; exit 1; }
done
echo "$PROM_OPERATOR_VERSION" > "$OUT/VERSION"
ls "$OUT/crds"
touch "$OUT/.done"
