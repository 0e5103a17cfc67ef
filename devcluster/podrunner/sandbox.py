"""What stands in for a container: a pod directory on the node, its volumes, and a process
in a private mount namespace (and a UTS and network namespace unless the pod shares the
host's) that `setpriv` turns into the pod's user before it execs the container's command.

The launch script is built by pure functions (`launch_argv`); this module's classes do the
side effects: create directories and files, mount points on the host, processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devcluster.paths import ROOT
from devcluster.podrunner.podspec import (
    EmptyDirVolume,
    FilesVolume,
    HostPathVolume,
    LaunchPlan,
    ProjectedFile,
    VolumeMount,
)
from devcluster.runtime import VENV_BIN, RuntimeDir

# returned by netns_for_pod: run the pod in the host's network namespace (e.g. an operator
# pod that must reach the apiserver on loopback, as a kube-proxy DNAT would give it)
HOST_NETNS = "<host>"

# What stands in for the container image: the venv and the checkout its editable install
# points at. A pod volume mounted over a parent of them (an emptyDir at /tmp while the
# checkout is a clone under /tmp) would hide the image's code, so they are mounted back.
IMAGE_PATHS = (ROOT, VENV_BIN.parent.resolve())


@dataclass(frozen=True)
class BindMount:
    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class PreparedContainer:
    """A launch plan whose volumes and files exist on the node."""

    plan: LaunchPlan
    mounts: list[BindMount]
    termination_file: Path
    log_path: Path

    @property
    def name(self) -> str:
        return self.plan.name


@dataclass(frozen=True)
class Network:
    """Where a pod's processes live: the runner's `netns_for_pod` answer (a named netns,
    HOST_NETNS or None) and the pod's `hostNetwork`."""

    netns: str | None
    host_network: bool

    @property
    def entered(self) -> str | None:
        """The named namespace to `ip netns exec` into, if any."""
        return None if self.netns == HOST_NETNS else self.netns

    @property
    def isolated(self) -> bool:
        """A fresh namespace of the pod's own, with only loopback."""
        return self.netns is None and not self.host_network

    @property
    def applies_sysctls(self) -> bool:
        # never on the host: only inside the pod's (or the lab's) network namespace
        return self.entered is not None or self.isolated

    @property
    def on_host(self) -> bool:
        return self.netns == HOST_NETNS or (self.netns is None and self.host_network)

    def pod_ips(self) -> list[str]:
        return ["127.0.0.1"] if self.on_host else netns_addresses(self.netns)


# --- the launch command (pure) ----------------------------------------------------------------


def shadowed_image_paths(mounts: Sequence[BindMount]) -> list[Path]:
    """Image paths a mount would hide (they are mounted back over it)."""
    return [path for path in IMAGE_PATHS if any(path.is_relative_to(m.target) for m in mounts)]


def image_stage_dirs(container: PreparedContainer) -> list[tuple[Path, Path]]:
    """(stage dir, image path) for every shadowed image path: bound to the stage before the
    pod's mounts, and back from it after them."""
    stage_root = container.termination_file.parent
    return [
        (stage_root / f"image-{index}", path)
        for index, path in enumerate(shadowed_image_paths(container.mounts))
    ]


def _network_lines(container: PreparedContainer, network: Network, hostname: str) -> list[str]:
    lines = []
    if network.isolated:
        lines.append("ip link set lo up")
    if network.applies_sysctls:
        for key, value in container.plan.sysctls:
            proc_path = "/proc/sys/" + key.replace(".", "/")
            lines.append(f"printf '%s' {shlex.quote(value)} > {shlex.quote(proc_path)}")
    if not network.host_network:
        lines.append(f"hostname {shlex.quote(hostname)}")
    return lines


def _mount_lines(container: PreparedContainer) -> list[str]:
    stages = [
        (shlex.quote(str(stage)), shlex.quote(str(path)))
        for stage, path in image_stage_dirs(container)
    ]
    lines = [f"mount --bind {image} {stage}" for stage, image in stages]
    for mount in container.mounts:
        source, target = shlex.quote(str(mount.source)), shlex.quote(mount.target)
        lines.append(f"mount --bind {source} {target}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    for stage, image in stages:
        lines.append(f"mkdir -p {image}")
        lines.append(f"mount --bind {stage} {image}")
        lines.append(f"mount -o remount,bind,ro {image}")
    if container.plan.identity.read_only_root:
        lines.append("mount -o remount,bind,ro /")
    return lines


def launch_script(container: PreparedContainer, network: Network, hostname: str) -> str:
    """The shell run inside the new namespaces; it execs setpriv -> the command ("$@")."""
    lines = [
        "set -e",
        *_network_lines(container, network, hostname),
        *_mount_lines(container),
        f"cd {shlex.quote(container.plan.working_dir)}",
        f'exec {shlex.join(container.plan.identity.setpriv_args())} -- "$@"',
    ]
    return "\n".join(lines)


def launch_argv(container: PreparedContainer, network: Network, hostname: str) -> list[str]:
    unshare = ["unshare", "--mount", "--propagation=private"]
    if not network.host_network:
        unshare.append("--uts")
    if network.isolated:
        unshare.append("--net")
    prefix = ["ip", "netns", "exec", network.entered] if network.entered else []
    script = launch_script(container, network, hostname)
    return [*prefix, *unshare, "--", "/bin/sh", "-c", script, "sh", *container.plan.argv]


# --- side effects -----------------------------------------------------------------------------


class MountPoints:
    """Mount targets must exist on the host: missing ones are created, and remembered (in
    the runner's runtime dir too) so they are removed again."""

    def __init__(self) -> None:
        self.rundir: RuntimeDir | None = None
        self.created: set[Path] = set()
        self._lock = threading.Lock()

    def ensure(self, target: str, is_dir: bool) -> None:
        path = Path(target)
        if path.exists():
            return
        missing = [path]
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        if is_dir:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        with self._lock:
            self.created.update(missing)
        if self.rundir is not None:
            for created in missing:
                self.rundir.note_created_path(created)


VolumeFiles = Callable[[FilesVolume], Mapping[str, ProjectedFile]]


class PodSandbox:
    """One pod's directory on the node (`containers/<name>/`, `volumes/<name>/`) and the
    processes started from it."""

    def __init__(self, pod_dir: Path, mount_points: MountPoints) -> None:
        self.dir = pod_dir
        self.mount_points = mount_points
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def create(self) -> None:
        self.dir.mkdir(parents=True)

    def prepare(
        self, plan: LaunchPlan, volume_files: VolumeFiles, fs_group: int | None
    ) -> PreparedContainer:
        """Materialise the plan's volumes and files (`volume_files` reads what a files
        volume holds; it may raise PodSpecError)."""
        cdir = self.dir / "containers" / plan.name
        cdir.mkdir(parents=True, exist_ok=True)
        termination_file = cdir / "termination-log"
        termination_file.touch()
        termination_file.chmod(0o666)  # the kubelet does the same
        mounts = [
            BindMount(self._mount_source(m, volume_files, fs_group), m.target, m.read_only)
            for m in plan.volume_mounts
        ]
        mounts.append(BindMount(termination_file, plan.termination_message_path, False))
        return PreparedContainer(plan, mounts, termination_file, cdir / "output.log")

    def _mount_source(
        self, mount: VolumeMount, volume_files: VolumeFiles, fs_group: int | None
    ) -> Path:
        source = self._volume_dir(mount.volume, volume_files, fs_group)
        return source / mount.sub_path if mount.sub_path else source

    def _volume_dir(
        self,
        volume: HostPathVolume | EmptyDirVolume | FilesVolume,
        volume_files: VolumeFiles,
        fs_group: int | None,
    ) -> Path:
        """A volume is materialised once per pod; its containers share it."""
        if isinstance(volume, HostPathVolume):
            return volume.path
        target = self.dir / "volumes" / volume.name
        if target.exists():
            return target
        if isinstance(volume, EmptyDirVolume):
            target.mkdir(parents=True)
            target.chmod(0o777)
            return target
        # read before creating the directory: a missing Secret leaves the pod Pending, and
        # the retry must not find an empty volume that looks materialised
        files = volume_files(volume)
        target.mkdir(parents=True)
        target.chmod(0o755)
        for rel, file in files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(file.data)
            if fs_group is not None:
                os.chown(path, 0, fs_group)
            # the kubelet makes files group-readable for fsGroup
            path.chmod(file.mode | (0o040 if fs_group is not None else 0))
        return target

    def launch(self, container: PreparedContainer, network: Network, hostname: str) -> int:
        """Start the container's process; its pid."""
        for mount in container.mounts:
            self.mount_points.ensure(mount.target, mount.source.is_dir())
        container.termination_file.write_bytes(b"")
        for stage, _ in image_stage_dirs(container):
            stage.mkdir(exist_ok=True)
        argv = launch_argv(container, network, hostname)
        with open(container.log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=container.plan.env,
                start_new_session=True,
            )
        self._procs[container.name] = proc
        return proc.pid

    def is_running(self, name: str) -> bool:
        """Started and not yet reaped (it may have exited)."""
        return name in self._procs

    def exited(self) -> str | None:
        """A container whose process has exited (not yet reaped), if any."""
        return next((name for name, proc in self._procs.items() if proc.poll() is not None), None)

    def reap(self, name: str) -> int:
        """The exit code of an exited container's process, as a runtime reports it."""
        returncode = self._procs.pop(name).returncode
        return 128 - returncode if returncode < 0 else returncode  # signal n: 128+n, as runc

    def kill_all(self, grace: float) -> None:
        kill_all(self._procs.values(), grace)


def kill_all(procs: Iterable[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process group still running, SIGKILL what remains after `grace`."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, end - time.monotonic()))
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def netns_addresses(netns: str | None) -> list[str]:
    """Global addresses (IPv4 first) of a named network namespace, for status.podIPs."""
    if not netns or netns == HOST_NETNS:
        return []
    try:
        out = subprocess.run(
            ["ip", "-n", netns, "-j", "addr", "show"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        links = json.loads(out or "[]")
    except (subprocess.SubprocessError, ValueError, OSError):
        return []
    v4: list[str] = []
    v6: list[str] = []
    for link in links:
        for addr in link.get("addr_info", []):
            if addr.get("scope") != "global":
                continue
            (v4 if addr.get("family") == "inet" else v6).append(addr["local"])
    # the API allows one pod IP per family
    return v4[:1] + v6[:1]
