"""The product's images (probe, operator) and the chart's Pushgateway, built from their
Dockerfiles by devcluster/env/build-images.sh on the local stand-in of their default base, and
pushed to a private registry."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from devcluster.paths import ENV_SCRIPTS
from devcluster.registry import Registry

BUILD_SCRIPT = ENV_SCRIPTS / "build-images.sh"
LOCAL_REPO = "localhost/traceroute-operator"
# repository paths in a registry: the chart's (its pushgateway.image.repository too)
REPOSITORIES = {
    "traceroute-probe": "traceroute-operator/traceroute-probe",
    "traceroute-operator": "traceroute-operator/traceroute-operator",
    "pushgateway": "prometheus/pushgateway",
}


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuiltImages:
    """Images of this checkout in the build storage, all with one tag (a hash of inputs)."""

    tag: str

    def local(self, name: str) -> str:
        if name not in REPOSITORIES:
            raise ImageError(f"no image {name!r}; known: {sorted(REPOSITORIES)}")
        return f"{LOCAL_REPO}/{name}:{self.tag}"


def build_images(timeout: float = 1800.0) -> BuiltImages:
    """Build (or find cached) the images of the current checkout."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise ImageError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if not last.startswith("tag="):
        raise ImageError(f"{BUILD_SCRIPT} printed no tag: {proc.stdout[-500:]!r}")
    return BuiltImages(last.removeprefix("tag="))


def push(images: BuiltImages, name: str, registry: Registry, timeout: float = 600.0) -> str:
    """Push one image to `registry` (TLS verified against its CA, with its credentials);
    returns the reference a pod uses."""
    remote = f"{registry.host}/{REPOSITORIES[name]}:{images.tag}"
    script = (
        f'source "{ENV_SCRIPTS / "buildah-env.sh"}" && '
        'buildah_cmd push -q --cert-dir "$1" --creds "$2" "$3" "docker://$4"'
    )
    proc = subprocess.run(
        [
            "bash",
            "-c",
            script,
            "push",
            str(registry.ca_file.parent),
            f"{registry.username}:{registry.password}",
            images.local(name),
            remote,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise ImageError(f"push {remote} failed: {proc.stderr[-2000:]}")
    return remote
