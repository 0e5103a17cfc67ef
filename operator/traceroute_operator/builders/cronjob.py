"""TracerouteProbe -> CronJob manifest (pure: same ref, spec, Pushgateway, config, same result)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from traceroute_probe.contract import TERMINATION_LOG_PATH, Flag

from ..config import OperatorConfig
from ..naming import CONTAINER_NAME, cronjob_name, probe_labels
from ..pushgateway_policy import EffectivePushgateway
from ..ref import ProbeRef
from ..spec import ProbeSpec
from ..stagger import (
    MAX_START_DELAY_SECONDS,
    identity,
    resolve_schedule,
    start_delay_seconds,
)

CA_MOUNT = "/etc/traceroute-probe/pushgateway-ca"
AUTH_MOUNT = "/etc/traceroute-probe/pushgateway-auth"


def probe_args(
    ref: ProbeRef,
    spec: ProbeSpec,
    pushgateway: EffectivePushgateway,
    max_start_delay: int = MAX_START_DELAY_SECONDS,
) -> list[str]:
    """Command-line arguments of the probe (contracts.md section 2)."""
    args = [
        Flag.PROTOCOL,
        spec.protocol,
        Flag.IP_FAMILY,
        spec.ip_family,
        Flag.MAX_HOPS,
        str(spec.max_hops),
        Flag.FLOWS,
        str(spec.flows),
        Flag.PROBES_PER_HOP,
        str(spec.probes_per_hop),
        Flag.TIMEOUT,
        str(spec.timeout_seconds),
        Flag.PPS,
        str(spec.packets_per_second),
        Flag.NAMESPACE,
        ref.namespace,
        Flag.PROBE,
        ref.name,
        Flag.TERMINATION_LOG,
        TERMINATION_LOG_PATH,
    ]
    if spec.port is not None:
        args += [Flag.PORT, str(spec.port)]
    if (delay := _start_delay(ref, spec, max_start_delay)) > 0:
        args += [Flag.START_DELAY_SECONDS, str(delay)]
    args += [Flag.PUSHGATEWAY, pushgateway.url]
    if pushgateway.tls_ca is not None:
        args += [Flag.PUSHGATEWAY_CA, f"{CA_MOUNT}/ca.crt"]
    if pushgateway.basic_auth is not None:
        args += [
            Flag.PUSHGATEWAY_USERNAME_FILE,
            f"{AUTH_MOUNT}/username",
            Flag.PUSHGATEWAY_PASSWORD_FILE,
            f"{AUTH_MOUNT}/password",
        ]
    for key in sorted(spec.metric_labels):
        args += [Flag.LABEL, f"{key}={spec.metric_labels[key]}"]
    if spec.expected_hops is not None:
        args += [Flag.EXPECTED_HOPS, str(spec.expected_hops)]
    for target in sorted(spec.expected_hops_by_target):
        args += [Flag.EXPECTED_HOPS, f"{target}={spec.expected_hops_by_target[target]}"]
    # "--" ends the options: a target can never be read as one
    return [*args, Flag.END_OF_OPTIONS, *spec.targets]


def _start_delay(ref: ProbeRef, spec: ProbeSpec, max_delay: int) -> int:
    return start_delay_seconds(
        spec.schedule, identity(ref.namespace, ref.name), spec.timeout_seconds, max_delay
    )


def _resources(spec: ProbeSpec, config: OperatorConfig) -> dict[str, Any]:
    if spec.resources is not None:
        return {k: dict(v) for k, v in spec.resources.items() if isinstance(v, Mapping)}
    return {
        "requests": {"cpu": config.probe_cpu_request, "memory": config.probe_memory_request},
        "limits": {"memory": config.probe_memory_limit},
    }


def build_cronjob(
    ref: ProbeRef,
    spec: ProbeSpec,
    pushgateway: EffectivePushgateway,
    config: OperatorConfig,
) -> dict[str, Any]:
    """The CronJob that runs a probe on its schedule."""
    labels = probe_labels(ref.name, ref.uid)

    volumes: list[dict[str, Any]] = [
        # Python and the resolver may want a scratch directory; the root fs is read-only
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    ca, auth = pushgateway.tls_ca, pushgateway.basic_auth
    if ca is not None:
        volumes.append(
            {
                "name": "pushgateway-ca",
                "secret": {
                    "secretName": ca.secret_name,
                    "items": [{"key": ca.key, "path": "ca.crt"}],
                    "defaultMode": 0o444,
                },
            }
        )
        mounts.append({"name": "pushgateway-ca", "mountPath": CA_MOUNT, "readOnly": True})
    if auth is not None:
        volumes.append(
            {
                "name": "pushgateway-auth",
                "secret": {
                    "secretName": auth.secret_name,
                    "items": [
                        {"key": auth.username_key, "path": "username"},
                        {"key": auth.password_key, "path": "password"},
                    ],
                    "defaultMode": 0o444,
                },
            }
        )
        mounts.append({"name": "pushgateway-auth", "mountPath": AUTH_MOUNT, "readOnly": True})

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image or config.probe_image,
        "imagePullPolicy": spec.image_pull_policy
        or ("IfNotPresent" if spec.image else config.probe_image_pull_policy),
        "command": list(config.probe_command),
        "args": probe_args(ref, spec, pushgateway, config.probe_start_delay_max_seconds),
        "resources": _resources(spec, config),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": config.probe_uid,
            "runAsGroup": config.probe_gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": TERMINATION_LOG_PATH,
        # the probe's JSON; when a failed probe wrote none (exit 2: bad arguments), the log
        # tail with its stderr line, which the operator puts into status.lastRun.errors
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.probe_uid,
            "runAsGroup": config.probe_gid,
            "seccompProfile": {"type": "RuntimeDefault"},
            # lets the unprivileged process open ICMP datagram sockets (a "safe" sysctl,
            # allowed by PodSecurity restricted)
            "sysctls": [
                {
                    "name": "net.ipv4.ping_group_range",
                    "value": f"{config.probe_gid} {config.probe_gid}",
                }
            ],
        },
        "containers": [container],
        "volumes": volumes,
    }
    # the default image's pull Secrets apply only to the default image
    pull_secrets = spec.image_pull_secrets or (
        () if spec.image else config.probe_image_pull_secrets
    )
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.affinity:
        pod_spec["affinity"] = dict(spec.affinity)

    cronjob_spec: dict[str, Any] = {
        "schedule": resolve_schedule(spec.schedule, identity(ref.namespace, ref.name)),
        "suspend": spec.suspend,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": config.starting_deadline_seconds,
        "successfulJobsHistoryLimit": config.successful_jobs_history_limit,
        "failedJobsHistoryLimit": config.failed_jobs_history_limit,
        "jobTemplate": {
            "metadata": {"labels": dict(labels)},
            "spec": {
                # a failed run is not retried: the next scheduled run is the retry
                "backoffLimit": 0,
                "activeDeadlineSeconds": spec.timeout_seconds
                + _start_delay(ref, spec, config.probe_start_delay_max_seconds)
                + config.job_deadline_margin_seconds,
                "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            },
        },
    }
    if spec.time_zone:
        cronjob_spec["timeZone"] = spec.time_zone
    metadata: dict[str, Any] = {
        "name": cronjob_name(ref.name),
        "namespace": ref.namespace,
        "labels": dict(labels),
    }
    owner = ref.owner_reference()
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata, "spec": cronjob_spec}
