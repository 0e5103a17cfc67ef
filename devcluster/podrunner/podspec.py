"""Pod + container spec -> a typed launch plan, by the kubelet's rules.

Nothing here starts a process or touches a mount or namespace. What the rules need from the
cluster (Secret/ConfigMap data, ServiceAccount tokens) comes in through `ClusterObjects`, so
they can be tested against a dict; executables are looked up on the host (read only).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from devcluster.runtime import VENV_BIN

Pod = dict[str, Any]

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
CONTAINER_PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_RESTARTS = 3
MAX_KILL_GRACE_SECONDS = 10.0
DEFAULT_TOKEN_EXPIRATION_SECONDS = 3607  # what admission puts into kube-api-access

# containerd's default capability set for a container
DEFAULT_CAPABILITIES = frozenset(
    {
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    }
)


@dataclass(frozen=True)
class Image:
    """What the runner knows of an image: its ENTRYPOINT/CMD and default USER."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: int = 0
    group: int = 0


# keyed by the image's repository basename (registry, tag and digest stripped)
IMAGES: dict[str, Image] = {
    "traceroute-probe": Image(
        entrypoint=(str(VENV_BIN / "traceroute-probe"),), user=65534, group=65534
    ),
    "traceroute-operator": Image(
        entrypoint=(str(VENV_BIN / "traceroute-operator"),), user=65534, group=65534
    ),
    "python": Image(cmd=(str(VENV_BIN / "python"),)),
}

COMMAND_ALIASES = {
    "python": str(VENV_BIN / "python"),
    "python3": str(VENV_BIN / "python"),
}


class PodSpecError(Exception):
    """The pod cannot be started as specified (kubelet: CreateContainerConfigError etc.)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class ClusterObjects(Protocol):
    """What a pod's spec refers to in its namespace, read from the apiserver."""

    def object_data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """Decoded data of a Secret or ConfigMap; None if missing and `optional`, else
        PodSpecError when missing."""

    def service_account_token(
        self, service_account: str, expiration_seconds: int, audience: str | None
    ) -> str:
        """A token of `service_account` bound to the pod."""


@dataclass(frozen=True)
class PodFacts:
    """What the node knows about a pod beyond its spec: fieldRef and injected env values."""

    node_name: str
    pod_ips: tuple[str, ...]
    apiserver_host: str
    apiserver_port: int


# --- small rules ------------------------------------------------------------------------------


def image_name(image: str) -> str:
    """`registry:5000/org/traceroute-probe:1.2@sha256:..` -> `traceroute-probe`."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined vars replaced, `$$` escapes, unknown kept."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(sub, text)


def decode_object_data(kind: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """The data of a Secret (base64) or ConfigMap (`data` + base64 `binaryData`), as text
    that round-trips bytes (latin-1)."""
    out: dict[str, str] = {}
    if kind == "Secret":
        for key, value in (obj.get("data") or {}).items():
            out[key] = base64.b64decode(value).decode("latin-1")
    else:
        out.update(obj.get("data") or {})
        for key, value in (obj.get("binaryData") or {}).items():
            out[key] = base64.b64decode(value).decode("latin-1")
    return out


def active_deadline_seconds(pod: Pod, cap: float | None) -> float | None:
    """How long the pod may run here: `activeDeadlineSeconds`, at most `cap` (None: no limit)."""
    active = pod["spec"].get("activeDeadlineSeconds")
    if active is None:
        return cap
    return float(active) if cap is None else min(cap, float(active))


def kill_grace_seconds(pod: Pod) -> float:
    """SIGTERM -> SIGKILL grace of a deletion (kubelet default 30 s; capped for tests)."""
    meta, spec = pod["metadata"], pod["spec"]
    grace = meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"))
    return min(float(30 if grace is None else grace), MAX_KILL_GRACE_SECONDS)


def restarts_after(restart_policy: str, exit_code: int) -> bool:
    """Whether the kubelet restarts a container that exited with `exit_code`."""
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


def unsupported_feature(pod: Pod) -> str | None:
    """Why the runner cannot run this pod at all, or None."""
    spec = pod["spec"]
    if spec.get("initContainers") or spec.get("ephemeralContainers"):
        return "init and ephemeral containers are not emulated"
    return None


# --- identity ---------------------------------------------------------------------------------


def merged_security_context(pod: Pod, container: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(pod["spec"].get("securityContext") or {})
    merged.update(container.get("securityContext") or {})
    return merged


def capability_set(security_context: Mapping[str, Any]) -> set[str]:
    """Bounding set of the container: runtime defaults - drop + add (privileged: all)."""
    if security_context.get("privileged"):
        return {"ALL"}
    caps = security_context.get("capabilities") or {}
    drop = {c.upper().removeprefix("CAP_") for c in caps.get("drop") or []}
    add = {c.upper().removeprefix("CAP_") for c in caps.get("add") or []}
    base = set() if "ALL" in drop else set(DEFAULT_CAPABILITIES - drop)
    return base | add


def setpriv_args(
    uid: int,
    gid: int,
    groups: Sequence[int],
    capabilities: set[str],
    no_new_privs: bool,
) -> list[str]:
    if "ALL" in capabilities:
        bounding = "+all"
    else:
        bounding = ",".join(["-all", *(f"+{c.lower()}" for c in sorted(capabilities))])
    args = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    args.append(f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups")
    # inheritable/ambient stay empty: a non-root process keeps no capability across exec,
    # exactly like a container without ambient capabilities
    args += ["--inh-caps=-all", f"--bounding-set={bounding}"]
    if no_new_privs:
        args.append("--no-new-privs")
    # the pod process dies with the runner even if the runner is SIGKILLed
    args += ["--pdeathsig=KILL"]
    return args


@dataclass(frozen=True)
class Identity:
    """Who the container's process is and what it may do."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    capabilities: frozenset[str]
    no_new_privs: bool
    read_only_root: bool

    def setpriv_args(self) -> list[str]:
        return setpriv_args(
            self.uid, self.gid, self.groups, set(self.capabilities), self.no_new_privs
        )


def container_identity(
    pod: Pod, security_context: Mapping[str, Any], image: Image | None
) -> Identity:
    sc = security_context
    uid = sc.get("runAsUser", image.user if image else 0)
    gid = sc.get("runAsGroup", image.group if image else 0)
    if sc.get("runAsNonRoot") and uid == 0:
        raise PodSpecError(
            "CreateContainerConfigError",
            "container has runAsNonRoot and image will run as root",
        )
    pod_sc = pod["spec"].get("securityContext") or {}
    groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    return Identity(
        uid=int(uid),
        gid=int(gid),
        groups=tuple(groups),
        capabilities=frozenset(capability_set(sc)),
        # Kubernetes sets no_new_privs only when allowPrivilegeEscalation is false
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
    )


# --- command ----------------------------------------------------------------------------------


def resolve_executable(arg0: str) -> str:
    """The host path that stands in for the container's executable."""
    if arg0 in COMMAND_ALIASES:
        return COMMAND_ALIASES[arg0]
    base = os.path.basename(arg0)
    if (VENV_BIN / base).is_file() and (not os.path.isabs(arg0) or not Path(arg0).exists()):
        # an image path like /usr/local/bin/traceroute-probe: the venv has it
        return str(VENV_BIN / base)
    if os.path.isabs(arg0):
        if Path(arg0).exists():
            return arg0
        raise PodSpecError("StartError", f"executable {arg0} not found")
    found = shutil.which(arg0, path=CONTAINER_PATH)
    if not found:
        raise PodSpecError("StartError", f"executable {arg0!r} not found in $PATH")
    return found


def container_argv(
    container: Mapping[str, Any], image: Image | None, env: Mapping[str, str]
) -> list[str]:
    """`command` + `args` after `$(VAR)` expansion; the image's ENTRYPOINT (+ CMD when no
    args are given) without `command`; argv[0] resolved on the host."""
    command = [expand_vars(a, env) for a in container.get("command") or []]
    args = [expand_vars(a, env) for a in container.get("args") or []]
    if not command:
        if image is None:
            image_ref = container.get("image", "")
            raise PodSpecError("ErrImagePull", f"pod runner knows no image {image_ref!r}")
        command = list(image.entrypoint)
        if not args:
            args = list(image.cmd)
    argv = command + args
    if not argv:
        raise PodSpecError("CreateContainerError", "no command specified")
    argv[0] = resolve_executable(argv[0])
    return argv


# --- env --------------------------------------------------------------------------------------


def field_value(pod: Pod, field_path: str, facts: PodFacts) -> str:
    """A downward-API `fieldRef` value."""
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": facts.node_name,
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.hostIP": "127.0.0.1",
        "status.podIP": next(iter(facts.pod_ips), ""),
    }
    if field_path in simple:
        return str(simple[field_path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", field_path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise PodSpecError("CreateContainerConfigError", f"unsupported fieldRef {field_path}")


def injected_env(pod: Pod, security_context: Mapping[str, Any], facts: PodFacts) -> dict[str, str]:
    """What every container gets before its own env: PATH, HOSTNAME, HOME and the
    `kubernetes` Service (in-cluster clients use it)."""
    uid = security_context.get("runAsUser", 0)
    host, port = facts.apiserver_host, facts.apiserver_port
    return {
        "PATH": CONTAINER_PATH,
        "HOSTNAME": pod["metadata"]["name"][:63],
        "HOME": "/root" if uid == 0 else "/",
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
    }


def _env_from(container: Mapping[str, Any], objects: ClusterObjects) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                ref = source[key]
                data = objects.object_data(kind, ref["name"], bool(ref.get("optional")))
                for k, v in (data or {}).items():
                    env[prefix + k] = v
    return env


def _key_ref_value(pod: Pod, value_from: Mapping[str, Any], objects: ClusterObjects) -> str | None:
    """A secretKeyRef/configMapKeyRef value; None when optional and missing."""
    kind = "Secret" if "secretKeyRef" in value_from else "ConfigMap"
    ref = value_from["secretKeyRef" if kind == "Secret" else "configMapKeyRef"]
    optional = bool(ref.get("optional"))
    data = objects.object_data(kind, ref["name"], optional)
    if data is None or ref["key"] not in data:
        if optional:
            return None
        ns = pod["metadata"]["namespace"]
        raise PodSpecError(
            "CreateContainerConfigError",
            f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}",
        )
    return data[ref["key"]]


def _value_from(
    pod: Pod, value_from: Mapping[str, Any], facts: PodFacts, objects: ClusterObjects
) -> str | None:
    """The value of an env var's `valueFrom`; None: the var is left out."""
    if "fieldRef" in value_from:
        return field_value(pod, value_from["fieldRef"]["fieldPath"], facts)
    if "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
        return _key_ref_value(pod, value_from, objects)
    if "resourceFieldRef" in value_from:
        return "0"
    return None


def container_env(
    pod: Pod,
    container: Mapping[str, Any],
    security_context: Mapping[str, Any],
    facts: PodFacts,
    objects: ClusterObjects,
) -> dict[str, str]:
    """The container's environment: injected vars, then `envFrom`, then `env` in order
    (literal values see the vars defined before them)."""
    env = injected_env(pod, security_context, facts)
    env.update(_env_from(container, objects))
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand_vars(var["value"], env)
            continue
        value_from = var.get("valueFrom")
        if not value_from:
            env[name] = ""
            continue
        value = _value_from(pod, value_from, facts, objects)
        if value is not None:
            env[name] = value
    return env


# --- volumes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostPathVolume:
    path: Path


@dataclass(frozen=True)
class EmptyDirVolume:
    name: str


@dataclass(frozen=True)
class FilesVolume:
    """A volume of files written by the node: secret, configMap, projected, downwardAPI
    (any other kind is refused when its files are asked for)."""

    name: str
    spec: Mapping[str, Any]


VolumePlan = HostPathVolume | EmptyDirVolume | FilesVolume


@dataclass(frozen=True)
class VolumeMount:
    volume: VolumePlan
    sub_path: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class ProjectedFile:
    data: bytes
    mode: int


def volume_plan(volume: Mapping[str, Any]) -> VolumePlan:
    if "hostPath" in volume:
        return HostPathVolume(Path(str(volume["hostPath"]["path"])))
    if "emptyDir" in volume:
        return EmptyDirVolume(str(volume["name"]))
    return FilesVolume(str(volume["name"]), volume)


def volume_mounts(pod: Pod, container: Mapping[str, Any]) -> list[VolumeMount]:
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise PodSpecError("CreateContainerConfigError", f"no volume {mount['name']}")
        mounts.append(
            VolumeMount(
                volume_plan(volume),
                str(mount.get("subPath") or ""),
                mount["mountPath"],
                bool(mount.get("readOnly")),
            )
        )
    return mounts


def fs_group(pod: Pod) -> int | None:
    value = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    return None if value is None else int(value)


def _object_files(
    kind: str, name: str, src: Mapping[str, Any], mode: int, objects: ClusterObjects
) -> dict[str, ProjectedFile]:
    """The files of a Secret/ConfigMap volume source: every key, or the listed `items`."""
    data = objects.object_data(kind, name, bool(src.get("optional")))
    if data is None:
        return {}
    items = src.get("items")
    if not items:
        return {key: ProjectedFile(value.encode("latin-1"), mode) for key, value in data.items()}
    files = {}
    for item in items:
        if item["key"] not in data:
            if src.get("optional"):
                continue
            raise PodSpecError(
                "CreateContainerConfigError", f"key {item['key']} not in {kind} {name}"
            )
        files[item["path"]] = ProjectedFile(
            data[item["key"]].encode("latin-1"), int(item.get("mode", mode))
        )
    return files


def _downward_files(
    pod: Pod, src: Mapping[str, Any], mode: int, facts: PodFacts
) -> dict[str, ProjectedFile]:
    return {
        item["path"]: ProjectedFile(
            field_value(pod, item["fieldRef"]["fieldPath"], facts).encode(),
            int(item.get("mode", mode)),
        )
        for item in src.get("items") or []
    }


def _projected_source_files(
    pod: Pod, source: Mapping[str, Any], mode: int, facts: PodFacts, objects: ClusterObjects
) -> dict[str, ProjectedFile]:
    if "secret" in source:
        return _object_files("Secret", source["secret"]["name"], source["secret"], mode, objects)
    if "configMap" in source:
        src = source["configMap"]
        return _object_files("ConfigMap", src["name"], src, mode, objects)
    if "downwardAPI" in source:
        return _downward_files(pod, source["downwardAPI"], mode, facts)
    if "serviceAccountToken" in source:
        src = source["serviceAccountToken"]
        token = objects.service_account_token(
            pod["spec"].get("serviceAccountName", "default"),
            int(src.get("expirationSeconds", DEFAULT_TOKEN_EXPIRATION_SECONDS)),
            src.get("audience") or None,
        )
        return {src["path"]: ProjectedFile(token.encode(), mode)}
    return {}


def volume_files(
    pod: Pod, volume: FilesVolume, facts: PodFacts, objects: ClusterObjects
) -> dict[str, ProjectedFile]:
    """Relative path -> content and mode of every file the node writes into the volume."""
    spec = volume.spec
    files: dict[str, ProjectedFile] = {}
    if "secret" in spec or "configMap" in spec:
        kind = "Secret" if "secret" in spec else "ConfigMap"
        src = spec["secret" if kind == "Secret" else "configMap"]
        ref_name = src.get("secretName") if kind == "Secret" else src.get("name")
        mode = int(src.get("defaultMode", 0o644))
        files.update(_object_files(kind, str(ref_name), src, mode, objects))
    elif "projected" in spec:
        mode = int(spec["projected"].get("defaultMode", 0o644))
        for source in spec["projected"].get("sources") or []:
            files.update(_projected_source_files(pod, source, mode, facts, objects))
    elif "downwardAPI" in spec:
        mode = int(spec["downwardAPI"].get("defaultMode", 0o644))
        files.update(_downward_files(pod, spec["downwardAPI"], mode, facts))
    else:
        kinds = sorted(k for k in spec if k != "name")
        raise PodSpecError("CreateContainerConfigError", f"volume type {kinds} not emulated")
    return files


# --- the plan ---------------------------------------------------------------------------------


_NETWORK_SYSCTL = re.compile(r"net(\.[A-Za-z0-9_-]+)+")


def pod_sysctls(pod: Pod) -> list[tuple[str, str]]:
    """The pod's sysctls; only `net.*` (namespaced to the pod's network) are allowed."""
    sysctls = []
    for sysctl in (pod["spec"].get("securityContext") or {}).get("sysctls") or []:
        key = str(sysctl["name"])
        if not _NETWORK_SYSCTL.fullmatch(key):
            raise PodSpecError("SysctlForbidden", f"{key} is not a network sysctl")
        sysctls.append((key, str(sysctl["value"])))
    return sysctls


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start one container, before anything exists on the host."""

    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    identity: Identity
    working_dir: str
    volume_mounts: list[VolumeMount]
    termination_message_path: str
    fallback_to_logs: bool
    sysctls: list[tuple[str, str]]


def launch_plan(
    pod: Pod,
    container: Mapping[str, Any],
    images: Mapping[str, Image],
    facts: PodFacts,
    objects: ClusterObjects,
) -> LaunchPlan:
    """Raises PodSpecError with the kubelet's waiting reason when the spec cannot run."""
    image_ref = container.get("image", "")
    image = images.get(image_name(image_ref))
    sc = merged_security_context(pod, container)
    env = container_env(pod, container, sc, facts, objects)
    argv = container_argv(container, image, env)
    identity = container_identity(pod, sc, image)
    mounts = volume_mounts(pod, container)
    return LaunchPlan(
        name=container["name"],
        image=image_ref,
        argv=argv,
        env=env,
        identity=identity,
        working_dir=container.get("workingDir") or "/",
        volume_mounts=mounts,
        termination_message_path=container.get(
            "terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH
        ),
        fallback_to_logs=container.get("terminationMessagePolicy", "File")
        == "FallbackToLogsOnError",
        sysctls=pod_sysctls(pod),
    )
