#!/usr/bin/env bash
# Build the product's images from their Dockerfiles (probe, operator) and the chart's
# bundled Pushgateway for the tests, with buildah, on the local stand-in of the default
# base (build-base-standin.sh). The tag is a hash of every input, so a test run always
# gets images of the checkout it runs, and an unchanged checkout builds nothing.
# Prints the tag as the last line ("tag=<tag>").
#
# TLS to the Python package index from inside a build goes through a CA only this host
# trusts (a user's build needs none of this): pip in the RUN steps reads a pip.conf from
# a build-time volume over /root (an existing directory, so the image keeps no mount
# point file) that points at the host's CA bundle in that same volume.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/buildah-env.sh"
STANDIN_IMAGE="${STANDIN_IMAGE:-localhost/trop/debian:bookworm-slim-standin}"
REPO="${TROP_IMAGE_REPO:-localhost/traceroute-operator}"

bash "$here/build-base-standin.sh" >&2

# every file a Dockerfile COPYs, plus the Dockerfiles and this script
tag="$(cd "$root" && {
  find pyproject.toml README.md probe operator devcluster/env/images devcluster/env/build-images.sh \
    -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  # the stand-in's stamp (its tarball's mtime): a new base means new images
  printf '%s\n' "$CACHE"/images/.standin-*
} | sha256sum | cut -c1-16)"

home="$CACHE/containers/build-home"
mkdir -p "$home/.config/pip"
cp /etc/ssl/certs/ca-certificates.crt "$home/host-ca.pem"
printf '[global]\ncert = /root/host-ca.pem\n' > "$home/.config/pip/pip.conf"

build() {  # name dockerfile
  local image="$REPO/$1:$tag"
  if buildah_cmd inspect --type image "$image" >/dev/null 2>&1; then
    echo "$image cached" >&2
    return
  fi
  echo "building $image from $2" >&2
  local start=$SECONDS
  buildah_cmd build --layers --force-rm -q -f "$root/$2" \
    --build-arg "BASE=$STANDIN_IMAGE" \
    --volume "$home:/root:ro" \
    -t "$image" "$root" >"$CACHE/images/build-$1.log" 2>&1 \
    || { tail -40 "$CACHE/images/build-$1.log" >&2; exit 1; }
  echo "built $image in $((SECONDS - start)) s" >&2
}
build traceroute-probe probe/Dockerfile
build traceroute-operator operator/Dockerfile
build pushgateway devcluster/env/images/pushgateway.Dockerfile
# older builds of these repositories only fill the storage
buildah_cmd images --format '{{.Name}}:{{.Tag}}' | grep "^$REPO/" | grep -v ":$tag\$" \
  | xargs -r buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" rmi >/dev/null 2>&1 || true
echo "tag=$tag"
