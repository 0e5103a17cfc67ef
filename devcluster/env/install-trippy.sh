#!/usr/bin/env bash
# trippy (the `trip` binary), a reference tracer for `make bench-probe` only: built from
# crates.io with the lock file the crate ships, into the cache (outside the checkout).
set -euo pipefail
CACHE="${TROP_CACHE:-/var/cache/traceroute-operator}"
VERSION="${TRIPPY_VERSION:-0.13.0}"
OUT="$CACHE/trippy-$VERSION"
if [[ -x "$OUT/bin/trip" ]]; then
  echo "trippy cached in $OUT"; exit 0
fi
command -v cargo >/dev/null || { echo "install-trippy: cargo not found (needs a Rust toolchain)" >&2; exit 1; }
# Build in a private target dir; install only the binary into the cache (world readable).
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
CARGO_TARGET_DIR="$work/target" cargo install --quiet --locked --root "$work/root" \
  trippy --version "$VERSION"
mkdir -p "$OUT/bin"
install -m 755 "$work/root/bin/trip" "$OUT/bin/trip"
chmod 755 "$OUT" "$OUT/bin"
"$OUT/bin/trip" --version
