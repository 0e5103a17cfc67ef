#!/usr/bin/env bash
# A local stand-in for the images' default base (Debian bookworm slim; nothing
# can be pulled from a public registry here): `debootstrap --variant=minbase
# bookworm`, slimmed the way the official slim images are, with the official
# images' apt sources, imported into the build storage as $STANDIN_IMAGE.
# Cached as a tarball under $TROP_CACHE/images (re-imported when the storage lost it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/buildah-env.sh"
STANDIN_IMAGE="${STANDIN_IMAGE:-localhost/trop/debian:bookworm-slim-standin}"
images="$CACHE/images"
tarball="$images/debian-bookworm-minbase.tar"
mkdir -p "$images"

if [[ ! -f "$tarball" ]]; then
  work="$(mktemp -d /var/tmp/trop-debootstrap.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
  echo "debootstrap --variant=minbase bookworm (cold: ~1.5 min)"
  time debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rootfs="$work/rootfs"
  # the official images' sources (debootstrap writes only the main suite)
  rm -f "$rootfs/etc/apt/sources.list"
  cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  # what makes the official image "slim": no docs, man pages or translations from
  # later installs, and apt keeps no caches
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
DPKG
  cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  # This machine's Debian mirror serves a dated snapshot whose Release files have
  # expired; the host's apt is told so too. Only the stand-in needs it.
  [[ -f /etc/apt/apt.conf.d/99artifact-registry ]] && cp /etc/apt/apt.conf.d/99artifact-registry "$rootfs/etc/apt/apt.conf.d/"
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

stamp="$images/.standin-$(stat -c %Y "$tarball")"
if buildah_cmd inspect --type image "$STANDIN_IMAGE" >/dev/null 2>&1 && [[ -f "$stamp" ]]; then
  echo "base stand-in $STANDIN_IMAGE present"
  exit 0
fi
ctr="$(buildah_cmd from scratch)"
buildah_cmd add "$ctr" "$tarball" / >/dev/null
buildah_cmd config --cmd '["bash"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
buildah_cmd commit --rm -q "$ctr" "$STANDIN_IMAGE" >/dev/null
rm -f "$images"/.standin-*
touch "$stamp"
echo "base stand-in imported as $STANDIN_IMAGE"
