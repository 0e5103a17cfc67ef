# Sourced by the image build scripts: buildah with its storage in the cache
# (outside the checkout, never the machine's /var/lib/containers), runc as the
# runtime (crun refuses this machine's hybrid cgroups) and a containers.conf
# without default ulimits (RLIMIT_NOFILE cannot be raised here).
CACHE="${TROP_CACHE:-/var/cache/traceroute-operator}"
BUILDAH_ROOT="$CACHE/containers/storage"
BUILDAH_RUNROOT="/run/traceroute-operator-buildah"
mkdir -p "$BUILDAH_ROOT" "$BUILDAH_RUNROOT" "$CACHE/containers"
cat > "$CACHE/containers/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$CACHE/containers/containers.conf"
export BUILDAH_ISOLATION=chroot
buildah_cmd() {
  buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" --storage-driver overlay "$@"
}
