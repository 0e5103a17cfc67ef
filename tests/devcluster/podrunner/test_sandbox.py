"""The launch command (pure) and the pod directory a sandbox materialises; no root: nothing
here is mounted, unshared or executed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from devcluster.podrunner.podspec import (
    EmptyDirVolume,
    FilesVolume,
    HostPathVolume,
    Identity,
    LaunchPlan,
    PodSpecError,
    ProjectedFile,
    VolumeMount,
)
from devcluster.podrunner.sandbox import (
    HOST_NETNS,
    IMAGE_PATHS,
    BindMount,
    MountPoints,
    Network,
    PodSandbox,
    PreparedContainer,
    launch_argv,
    launch_script,
    shadowed_image_paths,
)

IDENTITY = Identity(
    uid=65534,
    gid=65534,
    groups=(),
    capabilities=frozenset(),
    no_new_privs=True,
    read_only_root=False,
)
PLAN = LaunchPlan(
    name="probe",
    image="traceroute-probe",
    argv=["/venv/bin/traceroute-probe", "--once"],
    env={"PATH": "/usr/bin"},
    identity=IDENTITY,
    working_dir="/work dir",
    volume_mounts=[],
    termination_message_path="/dev/termination-log",
    fallback_to_logs=False,
    sysctls=[("net.ipv4.ping_group_range", "0 2147483647")],
)


def _container(
    tmp_path: Path, mounts: list[BindMount] | None = None, **plan: object
) -> PreparedContainer:
    cdir = tmp_path / "containers" / "probe"
    return PreparedContainer(
        plan=replace(PLAN, **plan),  # type: ignore[arg-type]
        mounts=mounts or [],
        termination_file=cdir / "termination-log",
        log_path=cdir / "output.log",
    )


def test_an_isolated_pod_gets_its_own_network_uts_and_mount_namespaces(tmp_path: Path) -> None:
    network = Network(netns=None, host_network=False)
    assert network.isolated and network.applies_sysctls and not network.on_host
    argv = launch_argv(_container(tmp_path), network, "web-1")
    assert argv[:5] == ["unshare", "--mount", "--propagation=private", "--uts", "--net"]
    assert argv[5:8] == ["--", "/bin/sh", "-c"]
    assert argv[9:] == ["sh", "/venv/bin/traceroute-probe", "--once"]  # "$@" of the script
    script = argv[8].splitlines()
    assert script[:4] == [
        "set -e",
        "ip link set lo up",
        "printf '%s' '0 2147483647' > /proc/sys/net/ipv4/ping_group_range",
        "hostname web-1",
    ]
    assert script[-2] == "cd '/work dir'"
    assert script[-1] == (
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "
        '--bounding-set=-all --no-new-privs --pdeathsig=KILL -- "$@"'
    )
    assert network.pod_ips() == []  # nothing but loopback


def test_a_lab_netns_pod_enters_the_named_namespace(tmp_path: Path) -> None:
    network = Network(netns="trop-1-1-probe", host_network=False)
    argv = launch_argv(_container(tmp_path), network, "web-1")
    assert argv[:7] == [
        "ip", "netns", "exec", "trop-1-1-probe", "unshare", "--mount", "--propagation=private",
    ]  # fmt: skip
    assert "--net" not in argv
    script = launch_script(_container(tmp_path), network, "web-1")
    assert "ip link set lo up" not in script
    assert "> /proc/sys/net/ipv4/ping_group_range" in script  # inside the lab's netns
    assert "hostname web-1" in script


def test_host_network_pods_never_touch_the_hosts_sysctls_or_hostname(tmp_path: Path) -> None:
    for network in (Network(HOST_NETNS, host_network=False), Network(None, host_network=True)):
        assert network.on_host and not network.applies_sysctls and network.entered is None
        assert network.pod_ips() == ["127.0.0.1"]
        argv = launch_argv(_container(tmp_path), network, "web-1")
        assert argv[0] == "unshare" and "--net" not in argv
        assert "/proc/sys" not in argv[argv.index("-c") + 1]
    shared = launch_argv(_container(tmp_path), Network(None, host_network=True), "web-1")
    assert "--uts" not in shared and "hostname" not in shared[shared.index("-c") + 1]
    own_uts = launch_argv(_container(tmp_path), Network(HOST_NETNS, host_network=False), "web-1")
    assert "--uts" in own_uts and "hostname web-1" in own_uts[own_uts.index("-c") + 1]


def test_mounts_read_only_volumes_and_root(tmp_path: Path) -> None:
    mounts = [
        BindMount(Path("/pod/volumes/creds"), "/etc/creds", read_only=True),
        BindMount(Path("/pod/volumes/scratch"), "/scratch", read_only=False),
    ]
    read_only_root = replace(IDENTITY, read_only_root=True)
    container = _container(tmp_path, mounts, identity=read_only_root)
    script = launch_script(container, Network(None, False), "h").splitlines()
    start = script.index("mount --bind /pod/volumes/creds /etc/creds")
    assert script[start : start + 4] == [
        "mount --bind /pod/volumes/creds /etc/creds",
        "mount -o remount,bind,ro /etc/creds",
        "mount --bind /pod/volumes/scratch /scratch",
        "mount -o remount,bind,ro /",
    ]


def test_a_mount_over_the_images_code_is_mounted_back(tmp_path: Path) -> None:
    """An emptyDir over a parent of the checkout or venv would hide the image's code."""
    image_path = IMAGE_PATHS[0]
    over = BindMount(Path("/pod/volumes/tmp"), str(image_path.parent), read_only=False)
    assert shadowed_image_paths([over]) == [p for p in IMAGE_PATHS if p.is_relative_to(over.target)]
    assert shadowed_image_paths([BindMount(Path("/x"), "/trop-elsewhere", False)]) == []
    container = _container(tmp_path, [over])
    script = launch_script(container, Network(None, False), "h").splitlines()
    stage = tmp_path / "containers" / "probe" / "image-0"
    stash = script.index(f"mount --bind {image_path} {stage}")
    mount = script.index(f"mount --bind /pod/volumes/tmp {image_path.parent}")
    restore = script.index(f"mount --bind {stage} {image_path}")
    assert stash < mount < restore
    assert script[restore - 1] == f"mkdir -p {image_path}"
    assert script[restore + 1] == f"mount -o remount,bind,ro {image_path}"


def test_prepare_materialises_volumes_once_per_pod(tmp_path: Path) -> None:
    sandbox = PodSandbox(tmp_path / "pod", MountPoints())
    sandbox.create()
    reads: list[str] = []

    def files_of(volume: FilesVolume) -> Mapping[str, ProjectedFile]:
        reads.append(volume.name)
        return {"password": ProjectedFile(b"s3cr3t", 0o440), "sub/a": ProjectedFile(b"a", 0o644)}

    creds = FilesVolume("creds", {"name": "creds", "secret": {"secretName": "creds"}})
    plan = replace(
        PLAN,
        volume_mounts=[
            VolumeMount(creds, "", "/etc/creds", read_only=True),
            VolumeMount(creds, "password", "/etc/password", read_only=True),
            VolumeMount(EmptyDirVolume("scratch"), "", "/scratch", read_only=False),
            VolumeMount(HostPathVolume(Path("/srv/data")), "", "/data", read_only=False),
        ],
        termination_message_path="/run/msg",
    )
    first = sandbox.prepare(plan, files_of, fs_group=None)
    second = sandbox.prepare(replace(plan, name="sidecar"), files_of, fs_group=None)
    assert reads == ["creds"]  # one volume, one read, shared by both containers
    volumes = tmp_path / "pod" / "volumes"
    assert [(m.source, m.target, m.read_only) for m in first.mounts] == [
        (volumes / "creds", "/etc/creds", True),
        (volumes / "creds" / "password", "/etc/password", True),
        (volumes / "scratch", "/scratch", False),
        (Path("/srv/data"), "/data", False),
        (first.termination_file, "/run/msg", False),  # over terminationMessagePath
    ]
    assert second.mounts[0].source == volumes / "creds"
    assert (volumes / "creds" / "password").read_bytes() == b"s3cr3t"
    assert (volumes / "creds" / "password").stat().st_mode & 0o777 == 0o440
    assert (volumes / "creds" / "sub" / "a").read_bytes() == b"a"
    assert (volumes / "scratch").stat().st_mode & 0o777 == 0o777
    assert first.termination_file == tmp_path / "pod" / "containers" / "probe" / "termination-log"
    assert first.termination_file.stat().st_mode & 0o777 == 0o666
    assert first.log_path == tmp_path / "pod" / "containers" / "probe" / "output.log"
    assert second.termination_file != first.termination_file


def test_missing_mount_points_are_created_and_remembered(tmp_path: Path) -> None:
    points = MountPoints()
    points.ensure(str(tmp_path / "a" / "b" / "dir"), is_dir=True)
    points.ensure(str(tmp_path / "c" / "file"), is_dir=False)
    points.ensure(str(tmp_path), is_dir=True)  # exists: left alone
    assert (tmp_path / "a" / "b" / "dir").is_dir()
    assert (tmp_path / "c" / "file").is_file()
    assert points.created == {
        tmp_path / "a",
        tmp_path / "a" / "b",
        tmp_path / "a" / "b" / "dir",
        tmp_path / "c",
        tmp_path / "c" / "file",
    }


def test_a_volume_whose_secret_is_missing_is_read_again_on_the_retry(tmp_path: Path) -> None:
    # a kubelet keeps the pod Pending until the Secret exists, then mounts its files
    sandbox = PodSandbox(tmp_path / "pod", MountPoints())
    sandbox.create()
    creds = FilesVolume("creds", {"name": "creds", "secret": {"secretName": "creds"}})
    plan = replace(PLAN, volume_mounts=[VolumeMount(creds, "", "/etc/creds", read_only=True)])

    def missing(volume: FilesVolume) -> Mapping[str, ProjectedFile]:
        raise PodSpecError("CreateContainerConfigError", 'secret "creds" not found')

    with pytest.raises(PodSpecError):
        sandbox.prepare(plan, missing, fs_group=None)
    prepared = sandbox.prepare(plan, lambda v: {"token": ProjectedFile(b"t", 0o440)}, None)
    assert (prepared.mounts[0].source / "token").read_bytes() == b"t"
