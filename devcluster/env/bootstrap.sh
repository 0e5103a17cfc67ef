#!/usr/bin/env bash
# Install everything the tests, the demo and the benchmarks need on a fresh
# machine. Idempotent and cached under $TROP_CACHE (outside the checkout, world
# readable: probe pods run as uid 65534 and need to read the interpreter).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export TROP_CACHE="${TROP_CACHE:-/var/cache/traceroute-operator}"
mkdir -p "$TROP_CACHE"
chmod 755 "$TROP_CACHE"

apt_packages=(prometheus-pushgateway prometheus traceroute mtr-tiny scamper nftables iproute2
              python3.11-venv util-linux unzip openssl procps
              # real nodes: runtime, CNI, image builds, the private registry
              containerd runc containernetworking-plugins buildah podman debootstrap
              docker-registry apache2-utils time)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== apt: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's postinst may start the packaged services; the tests run their own instances.
  # Only right after the install: later, a running prometheus may be a test's own.
  pkill -f '^/usr/bin/prometheus .*--config.file=/etc/prometheus' 2>/dev/null || true
  pkill -f '^/usr/bin/prometheus-pushgateway$' 2>/dev/null || true
  pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true
fi

venv="${TROP_VENV:-$TROP_CACHE/venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "== venv: $venv (Debian python3.11, readable by the probe's uid)"
  /usr/bin/python3.11 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "== pip: installing traceroute-operator[dev] into $venv"
  "$venv/bin/pip" install -q -e "$root[dev]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
else
  # keep the editable install pointing at this checkout (CI clones elsewhere)
  "$venv/bin/pip" install -q --no-deps -e "$root" >/dev/null
fi
chmod -R a+rX "$venv"

echo "== control plane"
bash "$here/build-control-plane.sh"
echo "== kstatus helper (sigs.k8s.io/cli-utils)"
bash "$here/build-kstatus.sh"
echo "== kubelet, kube-scheduler, pause image"
bash "$here/build-node.sh"
echo "== images (probe, operator, Pushgateway) on the local Debian base stand-in"
bash "$here/build-images.sh" | tail -1
echo "== helm and kubectl"
bash "$here/install-helm-kubectl.sh"
if [[ -f "$here/build-prometheus-operator-crds.sh" ]]; then
  echo "== prometheus-operator CRDs"
  bash "$here/build-prometheus-operator-crds.sh"
fi
echo "== environment ready in $TROP_CACHE"
