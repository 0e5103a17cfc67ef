"""Pod spec -> launch plan, by the kubelet's rules: no root, no cluster (Secrets and
ConfigMaps come from a dict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devcluster.podrunner.podspec import (
    COMMAND_ALIASES,
    CONTAINER_PATH,
    DEFAULT_CAPABILITIES,
    DEFAULT_TOKEN_EXPIRATION_SECONDS,
    EmptyDirVolume,
    FilesVolume,
    HostPathVolume,
    Image,
    Pod,
    PodFacts,
    PodSpecError,
    ProjectedFile,
    active_deadline_seconds,
    capability_set,
    container_argv,
    container_env,
    container_identity,
    expand_vars,
    image_name,
    kill_grace_seconds,
    launch_plan,
    merged_security_context,
    pod_sysctls,
    resolve_executable,
    restarts_after,
    setpriv_args,
    unsupported_feature,
    volume_files,
    volume_mounts,
)
from devcluster.runtime import VENV_BIN

FACTS = PodFacts(
    node_name="podrunner-abc123",
    pod_ips=("10.1.2.3", "fd00::3"),
    apiserver_host="127.0.0.1",
    apiserver_port=6443,
)
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
ECHO = Image(entrypoint=("/bin/echo",), cmd=("from-cmd",))


class FakeObjects:
    """Secrets/ConfigMaps from a dict; token requests recorded."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, str]] | None = None) -> None:
        self.objects = objects or {}
        self.token_requests: list[tuple[str, int, str | None]] = []

    def object_data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        if (kind, name) in self.objects:
            return dict(self.objects[kind, name])
        if optional:
            return None
        raise PodSpecError("CreateContainerConfigError", f'{kind.lower()} "{name}" not found')

    def service_account_token(
        self, service_account: str, expiration_seconds: int, audience: str | None
    ) -> str:
        self.token_requests.append((service_account, expiration_seconds, audience))
        return f"token-of-{service_account}"


def _pod(containers: list[dict[str, Any]] | None = None, **spec: Any) -> Pod:
    return {
        "metadata": {
            "name": "web-1",
            "namespace": "team",
            "uid": "0123-4567",
            "labels": {"app": "web"},
            "annotations": {"note": "hi"},
        },
        "spec": {"containers": containers or [{"name": "c", "image": "python"}], **spec},
    }


# --- small rules ------------------------------------------------------------------------------


def test_expand_vars_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand_vars("$(A)-$(B)", env) == "1-two"
    assert expand_vars("$$(A)", env) == "$(A)"  # escaped
    assert expand_vars("$(MISSING)", env) == "$(MISSING)"  # unknown stays literal
    assert expand_vars("$A", env) == "$A"  # shell syntax is not expanded


def test_image_name_strips_registry_tag_and_digest() -> None:
    assert image_name("ghcr.io/org/traceroute-probe:0.1.0") == "traceroute-probe"
    assert image_name("localhost:5000/traceroute-probe@sha256:abc") == "traceroute-probe"
    assert image_name("python") == "python"


def test_active_deadline_is_the_smaller_of_the_pods_and_the_runners_cap() -> None:
    assert active_deadline_seconds(_pod(), 300.0) == 300.0
    assert active_deadline_seconds(_pod(), None) is None
    assert active_deadline_seconds(_pod(activeDeadlineSeconds=3), 300.0) == 3.0
    assert active_deadline_seconds(_pod(activeDeadlineSeconds=900), 300.0) == 300.0
    assert active_deadline_seconds(_pod(activeDeadlineSeconds=900), None) == 900.0


def test_kill_grace_prefers_the_deletions_grace_and_is_capped() -> None:
    assert kill_grace_seconds(_pod()) == 10.0  # kubelet default 30 s, capped at 10
    assert kill_grace_seconds(_pod(terminationGracePeriodSeconds=1)) == 1.0
    deleting = _pod(terminationGracePeriodSeconds=5)
    deleting["metadata"]["deletionGracePeriodSeconds"] = 0
    assert kill_grace_seconds(deleting) == 0.0


def test_restart_policy_decides_which_exits_restart() -> None:
    assert restarts_after("Always", 0) and restarts_after("Always", 1)
    assert not restarts_after("OnFailure", 0) and restarts_after("OnFailure", 2)
    assert not restarts_after("Never", 1)


def test_init_and_ephemeral_containers_are_unsupported() -> None:
    assert unsupported_feature(_pod()) is None
    assert unsupported_feature(_pod(initContainers=[{"name": "i"}])) is not None
    assert unsupported_feature(_pod(ephemeralContainers=[{"name": "e"}])) is not None


# --- identity ---------------------------------------------------------------------------------


def test_capabilities_are_runtime_defaults_minus_drop_plus_add() -> None:
    assert capability_set({"capabilities": {"drop": ["ALL"]}}) == set()
    assert capability_set({"capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}) == {"NET_RAW"}
    assert capability_set({}) == set(DEFAULT_CAPABILITIES)
    assert "NET_RAW" not in capability_set({"capabilities": {"drop": ["CAP_NET_RAW"]}})
    args = setpriv_args(65534, 65534, [], set(), no_new_privs=True)
    assert "--bounding-set=-all" in args and "--no-new-privs" in args
    assert "--clear-groups" in args


def test_privileged_container_keeps_every_capability() -> None:
    assert capability_set({"privileged": True, "capabilities": {"drop": ["ALL"]}}) == {"ALL"}
    args = setpriv_args(0, 0, [1, 2], {"ALL"}, no_new_privs=False)
    assert args == [
        "setpriv",
        "--reuid=0",
        "--regid=0",
        "--groups=1,2",
        "--inh-caps=-all",
        "--bounding-set=+all",
        "--pdeathsig=KILL",
    ]


def test_container_security_context_overrides_the_pods() -> None:
    pod = _pod(securityContext={"runAsUser": 1000, "runAsGroup": 1000})
    container = {"name": "c", "securityContext": {"runAsUser": 2000}}
    assert merged_security_context(pod, container) == {"runAsUser": 2000, "runAsGroup": 1000}


def test_identity_of_a_restricted_container_with_fs_group() -> None:
    pod = _pod(securityContext={"fsGroup": 2000, "supplementalGroups": [3000]})
    sc = {**RESTRICTED, "capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}
    identity = container_identity(pod, sc, image=None)
    assert (identity.uid, identity.gid, identity.groups) == (65534, 65534, (3000, 2000))
    assert identity.capabilities == {"NET_RAW"}
    assert identity.no_new_privs is True
    assert identity.read_only_root is False
    assert identity.setpriv_args() == [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--groups=3000,2000",
        "--inh-caps=-all",
        "--bounding-set=-all,+net_raw",
        "--no-new-privs",
        "--pdeathsig=KILL",
    ]


def test_identity_falls_back_to_the_images_user() -> None:
    probe = Image(entrypoint=("/bin/true",), user=65534, group=65534)
    identity = container_identity(_pod(), {"runAsNonRoot": True}, probe)
    assert (identity.uid, identity.gid) == (65534, 65534)
    # no_new_privs only for an explicit allowPrivilegeEscalation: false
    assert identity.no_new_privs is False
    assert container_identity(_pod(), {}, None).uid == 0


def test_run_as_non_root_refuses_uid_0() -> None:
    with pytest.raises(PodSpecError) as err:
        container_identity(_pod(), {"runAsNonRoot": True}, Image(user=0))
    assert err.value.reason == "CreateContainerConfigError"
    with pytest.raises(PodSpecError):
        container_identity(_pod(), {"runAsNonRoot": True, "runAsUser": 0}, None)


# --- command ----------------------------------------------------------------------------------


def test_command_and_args_are_expanded_and_python_is_the_venvs() -> None:
    container = {"command": ["python", "-c", "$(CODE)"], "args": ["$(WHO)", "$$(WHO)"]}
    argv = container_argv(container, None, {"CODE": "print(1)", "WHO": "me"})
    assert argv == [COMMAND_ALIASES["python"], "-c", "print(1)", "me", "$(WHO)"]
    assert argv[0] == str(VENV_BIN / "python")


def test_without_command_the_images_entrypoint_runs_with_cmd_or_args() -> None:
    assert container_argv({"image": "echo"}, ECHO, {}) == ["/bin/echo", "from-cmd"]
    # args replace the image's CMD, as with Docker
    assert container_argv({"image": "echo", "args": ["x"]}, ECHO, {}) == ["/bin/echo", "x"]
    # a command replaces ENTRYPOINT and CMD
    assert container_argv({"command": ["/bin/echo"]}, ECHO, {}) == ["/bin/echo"]


def test_command_errors_carry_the_kubelets_reasons() -> None:
    with pytest.raises(PodSpecError) as err:
        container_argv({"image": "registry/unknown:1"}, None, {})
    assert err.value.reason == "ErrImagePull" and "registry/unknown:1" in err.value.message
    with pytest.raises(PodSpecError) as err:
        container_argv({"image": "empty"}, Image(), {})
    assert err.value.reason == "CreateContainerError"
    with pytest.raises(PodSpecError) as err:
        container_argv({"command": ["/nonexistent/trop-binary"]}, None, {})
    assert err.value.reason == "StartError"
    with pytest.raises(PodSpecError) as err:
        container_argv({"command": ["trop-no-such-command"]}, None, {})
    assert err.value.reason == "StartError"


def test_executables_resolve_on_the_containers_path() -> None:
    assert resolve_executable("/bin/sh") == "/bin/sh"
    assert resolve_executable("sh") in {f"{d}/sh" for d in CONTAINER_PATH.split(":")}
    # an image path the host lacks, of a script the venv has: the venv's
    image_path = "/trop-image-only/bin/traceroute-probe"
    assert resolve_executable(image_path) == str(VENV_BIN / "traceroute-probe")


# --- env --------------------------------------------------------------------------------------


def test_env_sources_in_kubernetes_order() -> None:
    objects = FakeObjects(
        {
            ("Secret", "creds"): {"password": "s3cr3t"},
            ("ConfigMap", "cfg"): {"MODE": "fast", "LEVEL": "2"},
        }
    )
    container = {
        "name": "c",
        "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "cfg"}}],
        "env": [
            {"name": "GREETING", "value": "hello"},
            {"name": "PHRASE", "value": "$(GREETING) $(CFG_MODE) $(LATER)"},
            {"name": "LATER", "value": "x"},
            {
                "name": "PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
            },
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "LEVEL"}}},
            {"name": "EMPTY"},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        ],
    }
    env = container_env(_pod(), container, {"runAsUser": 65534}, FACTS, objects)
    assert env["CFG_MODE"] == "fast" and env["CFG_LEVEL"] == "2"
    assert env["PHRASE"] == "hello fast $(LATER)"  # only vars defined before it
    assert env["PASSWORD"] == "s3cr3t"
    assert env["LEVEL"] == "2"
    assert env["EMPTY"] == ""
    assert env["CPU"] == "0"
    assert env["HOME"] == "/"
    assert env["HOSTNAME"] == "web-1"
    assert env["PATH"] == CONTAINER_PATH
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == env["KUBERNETES_SERVICE_PORT_HTTPS"] == "6443"
    assert env["KUBERNETES_PORT"] == "tcp://127.0.0.1:6443"
    assert container_env(_pod(), {"name": "c"}, {}, FACTS, objects)["HOME"] == "/root"


def test_field_refs_see_the_pod_and_its_node() -> None:
    fields = {
        "NAME": "metadata.name",
        "NS": "metadata.namespace",
        "UID": "metadata.uid",
        "NODE": "spec.nodeName",
        "SA": "spec.serviceAccountName",
        "POD_IP": "status.podIP",
        "HOST_IP": "status.hostIP",
        "APP": "metadata.labels['app']",
        "NOTE": "metadata.annotations['note']",
        "NONE": "metadata.labels['missing']",
    }
    container = {
        "name": "c",
        "env": [
            {"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in fields.items()
        ],
    }
    env = container_env(_pod(), container, {}, FACTS, FakeObjects())
    assert {k: env[k] for k in fields} == {
        "NAME": "web-1",
        "NS": "team",
        "UID": "0123-4567",
        "NODE": "podrunner-abc123",
        "SA": "default",
        "POD_IP": "10.1.2.3",  # the first (IPv4) pod IP
        "HOST_IP": "127.0.0.1",
        "APP": "web",
        "NOTE": "hi",
        "NONE": "",
    }
    no_ip = PodFacts("n", (), "127.0.0.1", 443)
    assert container_env(_pod(), container, {}, no_ip, FakeObjects())["POD_IP"] == ""


def test_unsupported_field_ref_is_a_config_error() -> None:
    container = {
        "name": "c",
        "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.x"}}}],
    }
    with pytest.raises(PodSpecError) as err:
        container_env(_pod(), container, {}, FACTS, FakeObjects())
    assert err.value.reason == "CreateContainerConfigError"


def test_missing_keys_and_objects_are_config_errors_unless_optional() -> None:
    objects = FakeObjects({("Secret", "creds"): {"password": "p"}})

    def env_of(ref: dict[str, Any]) -> dict[str, str]:
        container = {"name": "c", "env": [{"name": "V", "valueFrom": {"secretKeyRef": ref}}]}
        return container_env(_pod(), container, {}, FACTS, objects)

    assert "V" not in env_of({"name": "creds", "key": "other", "optional": True})
    assert "V" not in env_of({"name": "gone", "key": "k", "optional": True})
    with pytest.raises(PodSpecError) as err:
        env_of({"name": "creds", "key": "other"})
    assert err.value.message == "couldn't find key other in Secret team/creds"
    with pytest.raises(PodSpecError):
        env_of({"name": "gone", "key": "k"})
    optional_from = {"name": "c", "envFrom": [{"secretRef": {"name": "gone", "optional": True}}]}
    assert "V" not in container_env(_pod(), optional_from, {}, FACTS, objects)


# --- volumes ----------------------------------------------------------------------------------


def test_volume_mounts_name_their_volumes() -> None:
    pod = _pod(
        volumes=[
            {"name": "data", "hostPath": {"path": "/srv/data"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "creds", "secret": {"secretName": "creds"}},
        ]
    )
    container = {
        "name": "c",
        "volumeMounts": [
            {"name": "data", "mountPath": "/data", "readOnly": True},
            {"name": "scratch", "mountPath": "/tmp"},
            {"name": "creds", "mountPath": "/etc/pw", "subPath": "password"},
        ],
    }
    data, scratch, creds = volume_mounts(pod, container)
    assert data.volume == HostPathVolume(Path("/srv/data"))
    assert (data.target, data.read_only, data.sub_path) == ("/data", True, "")
    assert scratch.volume == EmptyDirVolume("scratch") and not scratch.read_only
    assert isinstance(creds.volume, FilesVolume) and creds.sub_path == "password"
    with pytest.raises(PodSpecError) as err:
        volume_mounts(pod, {"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]})
    assert err.value.message == "no volume nope"


def test_secret_and_config_map_volume_files_and_modes() -> None:
    objects = FakeObjects(
        {("Secret", "creds"): {"user": "u", "password": "p"}, ("ConfigMap", "cfg"): {"a": "1"}}
    )
    secret = FilesVolume(
        "s", {"name": "s", "secret": {"secretName": "creds", "defaultMode": 0o440}}
    )
    assert volume_files(_pod(), secret, FACTS, objects) == {
        "user": ProjectedFile(b"u", 0o440),
        "password": ProjectedFile(b"p", 0o440),
    }
    items = FilesVolume(
        "c",
        {
            "name": "c",
            "configMap": {
                "name": "cfg",
                "items": [{"key": "a", "path": "sub/a.txt", "mode": 0o600}],
            },
        },
    )
    assert volume_files(_pod(), items, FACTS, objects) == {"sub/a.txt": ProjectedFile(b"1", 0o600)}
    missing_key = FilesVolume(
        "c", {"name": "c", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "zz"}]}}
    )
    with pytest.raises(PodSpecError):
        volume_files(_pod(), missing_key, FACTS, objects)
    optional = FilesVolume("o", {"name": "o", "secret": {"secretName": "gone", "optional": True}})
    assert volume_files(_pod(), optional, FACTS, objects) == {}


def test_kube_api_access_volume_holds_a_bound_token_ca_and_namespace() -> None:
    """The projected volume admission adds to every pod, filled like the kubelet does."""
    objects = FakeObjects({("ConfigMap", "kube-root-ca.crt"): {"ca.crt": "PEM"}})
    volume = FilesVolume(
        "kube-api-access-x",
        {
            "name": "kube-api-access-x",
            "projected": {
                "defaultMode": 0o644,
                "sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        },
    )
    pod = _pod(serviceAccountName="prober")
    assert volume_files(pod, volume, FACTS, objects) == {
        "token": ProjectedFile(b"token-of-prober", 0o644),
        "ca.crt": ProjectedFile(b"PEM", 0o644),
        "namespace": ProjectedFile(b"team", 0o644),
    }
    assert objects.token_requests == [("prober", DEFAULT_TOKEN_EXPIRATION_SECONDS, None)]
    audience = FilesVolume(
        "t",
        {
            "name": "t",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": "t",
                            "audience": "vault",
                            "expirationSeconds": 600,
                        }
                    }
                ]
            },
        },
    )
    volume_files(_pod(), audience, FACTS, objects)
    assert objects.token_requests[-1] == ("default", 600, "vault")


def test_downward_api_volume_and_unknown_volume_kinds() -> None:
    volume = FilesVolume(
        "d",
        {
            "name": "d",
            "downwardAPI": {
                "defaultMode": 0o400,
                "items": [
                    {"path": "labels-app", "fieldRef": {"fieldPath": "metadata.labels['app']"}}
                ],
            },
        },
    )
    assert volume_files(_pod(), volume, FACTS, FakeObjects()) == {
        "labels-app": ProjectedFile(b"web", 0o400)
    }
    nfs = FilesVolume("n", {"name": "n", "nfs": {"server": "x", "path": "/"}})
    with pytest.raises(PodSpecError) as err:
        volume_files(_pod(), nfs, FACTS, FakeObjects())
    assert "not emulated" in err.value.message


# --- the plan ---------------------------------------------------------------------------------


def test_only_network_sysctls_are_allowed() -> None:
    allowed = _pod(
        securityContext={"sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 1"}]}
    )
    assert pod_sysctls(allowed) == [("net.ipv4.ping_group_range", "0 1")]
    forbidden = _pod(
        securityContext={"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]}
    )
    with pytest.raises(PodSpecError) as err:
        pod_sysctls(forbidden)
    assert err.value.reason == "SysctlForbidden"


def test_launch_plan_of_a_probe_pod() -> None:
    pod = _pod(
        [
            {
                "name": "probe",
                "image": "ghcr.io/org/traceroute-probe:0.1.0",
                "args": ["--target", "$(TARGET)"],
                "env": [{"name": "TARGET", "value": "192.0.2.1"}],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": {**RESTRICTED, "readOnlyRootFilesystem": True},
            }
        ],
    )
    images = {"traceroute-probe": Image(entrypoint=("/bin/echo",), user=65534, group=65534)}
    plan = launch_plan(pod, pod["spec"]["containers"][0], images, FACTS, FakeObjects())
    assert plan.name == "probe"
    assert plan.image == "ghcr.io/org/traceroute-probe:0.1.0"
    assert plan.argv == ["/bin/echo", "--target", "192.0.2.1"]
    assert plan.identity.read_only_root and plan.identity.capabilities == frozenset()
    assert plan.termination_message_path == "/dev/termination-log"
    assert plan.fallback_to_logs is True
    assert plan.working_dir == "/"
    assert plan.volume_mounts == [] and plan.sysctls == []
    unknown = launch_plan(
        pod, {"name": "x", "image": "nginx", "command": ["/bin/sh"]}, images, FACTS, FakeObjects()
    )
    assert unknown.argv == ["/bin/sh"] and unknown.fallback_to_logs is False
