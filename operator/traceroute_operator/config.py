"""All configuration of the operator, in one place, read from the environment.

The chart sets these on the operator's Deployment. Every variable starts with
``TRACEROUTE_``; the monitoring ones (ServiceMonitor, PrometheusRule, dashboards) are
documented in ``monitoring/settings.py`` and read through ``MonitoringSettings.from_env``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .monitoring.settings import MonitoringSettings
from .trust import image_repository, is_http_url

ENV_PREFIX = "TRACEROUTE_"


class ConfigError(ValueError):
    """A configuration variable has a value the operator cannot use."""


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the probe's namespace."""

    secret_name: str
    key: str


@dataclass(frozen=True)
class OperatorConfig:
    # The probe pods.
    probe_image: str = f"ghcr.io/traceroute-operator/traceroute-probe:{__version__}"
    probe_image_pull_policy: str = "IfNotPresent"
    # Secrets (in each probe namespace) for pulling the default image from a private registry
    probe_image_pull_secrets: tuple[str, ...] = ()
    probe_command: tuple[str, ...] = ("traceroute-probe",)
    probe_cpu_request: str = "20m"
    probe_memory_request: str = "48Mi"
    probe_memory_limit: str = "128Mi"
    # The probe process runs as this uid/gid; ping_group_range admits exactly this gid.
    probe_uid: int = 65534
    probe_gid: int = 65534

    # Longest start delay of a probe with an H schedule (stagger.py); 0 = start at once.
    probe_start_delay_max_seconds: int = 50

    # The CronJob of every probe.
    starting_deadline_seconds: int = 120
    successful_jobs_history_limit: int = 1
    failed_jobs_history_limit: int = 3
    # Job deadline = the run's own hard deadline plus this margin (pod start, push).
    job_deadline_margin_seconds: int = 120

    # Default Pushgateway of probes without spec.pushgateway.url; None = the in-cluster
    # Service named by the monitoring settings.
    pushgateway_url: str | None = None
    # Shards of the default Pushgateway: each probe pushes to one, picked by a stable hash of
    # its namespace/name (pushgateway_policy.py). Empty: the one default above.
    pushgateway_shards: tuple[str, ...] = ()
    # Default CA / basic-auth Secrets (looked up in each probe's namespace) for probes that
    # do not name their own.
    pushgateway_ca_secret: SecretKeyRef | None = None
    pushgateway_basic_auth_secret: str | None = None
    # Files the operator itself uses to reach the default Pushgateway.
    pushgateway_ca_file: str | None = None
    pushgateway_username_file: str | None = None
    pushgateway_password_file: str | None = None
    pushgateway_timeout_seconds: float = 5.0

    # Trust rules (trust.py, docs/security.md): what a probe's spec may name besides the
    # defaults. URL prefixes for spec.pushgateway.url; image prefixes for spec.image (empty:
    # any tag or digest of the default image's repository).
    allowed_pushgateway_urls: tuple[str, ...] = ()
    allowed_probe_images: tuple[str, ...] = ()

    # What the operator watches and where it lives.
    watch_namespaces: tuple[str, ...] = ()  # empty: every namespace (ClusterRole)
    operator_namespace: str = "traceroute-system"

    # The operator process.
    metrics_port: int = 8080  # 0 disables /metrics
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    workers: int = 16
    resync_seconds: float = 600.0  # re-apply children periodically (drift); 0 disables
    api_timeout_seconds: float = 30.0

    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces

    @property
    def default_pushgateway_url(self) -> str:
        return self.pushgateway_url or self.monitoring.pushgateway_url

    @property
    def own_pushgateway_urls(self) -> tuple[str, ...]:
        """The operator's own Pushgateways: every shard, else the one default."""
        return self.pushgateway_shards or (self.default_pushgateway_url,)

    @property
    def probe_image_prefixes(self) -> tuple[str, ...]:
        """Images a spec may name: the admin's list, else the default image's repository."""
        return self.allowed_probe_images or (image_repository(self.probe_image),)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = _Env(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for key, name in _TEXT_SETTINGS:
            if (value := env.text(name)) is not None:
                values[key] = value
        values.update(_list_settings(env))
        liveness = env.raw("LIVENESS_ENDPOINT")
        if liveness is not None:
            values["liveness_endpoint"] = liveness.strip() or None
        for key, name, low, high in _INT_SETTINGS:
            if (ivalue := env.integer(name, low, high)) is not None:
                values[key] = ivalue
        for key, name, flow in _FLOAT_SETTINGS:
            if (fvalue := env.number(name, flow)) is not None:
                values[key] = fvalue
        _check_values(values)
        try:
            monitoring = MonitoringSettings.from_env(env.environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if "operator_namespace" in values:
            # one namespace for both: the shared ServiceMonitor lives where the operator runs
            monitoring = _replace_operator_namespace(monitoring, values["operator_namespace"])
        else:
            values["operator_namespace"] = monitoring.operator_namespace
        values["monitoring"] = monitoring
        return cls(**values)


# (field, variable without the prefix) of the plain text settings
_TEXT_SETTINGS: tuple[tuple[str, str], ...] = (
    ("probe_image", "PROBE_IMAGE"),
    ("probe_image_pull_policy", "PROBE_IMAGE_PULL_POLICY"),
    ("probe_cpu_request", "PROBE_CPU_REQUEST"),
    ("probe_memory_request", "PROBE_MEMORY_REQUEST"),
    ("probe_memory_limit", "PROBE_MEMORY_LIMIT"),
    ("pushgateway_url", "PUSHGATEWAY_URL"),
    ("pushgateway_basic_auth_secret", "PUSHGATEWAY_BASIC_AUTH_SECRET"),
    ("pushgateway_ca_file", "PUSHGATEWAY_CA_FILE"),
    ("pushgateway_username_file", "PUSHGATEWAY_USERNAME_FILE"),
    ("pushgateway_password_file", "PUSHGATEWAY_PASSWORD_FILE"),
    ("operator_namespace", "OPERATOR_NAMESPACE"),
)
# (field, variable, lowest, highest)
_INT_SETTINGS: tuple[tuple[str, str, int, int], ...] = (
    ("probe_uid", "PROBE_UID", 1, 2**31 - 1),
    ("probe_gid", "PROBE_GID", 1, 2**31 - 1),
    ("probe_start_delay_max_seconds", "PROBE_START_DELAY_MAX_SECONDS", 0, 50),
    ("starting_deadline_seconds", "STARTING_DEADLINE_SECONDS", 10, 86400),
    ("successful_jobs_history_limit", "SUCCESSFUL_JOBS_HISTORY_LIMIT", 0, 100),
    ("failed_jobs_history_limit", "FAILED_JOBS_HISTORY_LIMIT", 0, 100),
    ("job_deadline_margin_seconds", "JOB_DEADLINE_MARGIN_SECONDS", 10, 3600),
    ("metrics_port", "METRICS_PORT", 0, 65535),
    ("workers", "WORKERS", 1, 256),
)
# (field, variable, lowest)
_FLOAT_SETTINGS: tuple[tuple[str, str, float], ...] = (
    ("resync_seconds", "RESYNC_SECONDS", 0.0),
    ("pushgateway_timeout_seconds", "PUSHGATEWAY_TIMEOUT_SECONDS", 0.1),
    ("api_timeout_seconds", "API_TIMEOUT_SECONDS", 1.0),
)


class _Env:
    """``TRACEROUTE_*`` variables, read and range-checked one by one (names without prefix)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        return self.environ.get(ENV_PREFIX + name)

    def text(self, name: str) -> str | None:
        raw = self.raw(name)
        return raw.strip() if raw is not None and raw.strip() else None

    def integer(self, name: str, low: int, high: int) -> int | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{name}: {raw!r} is not an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"{ENV_PREFIX}{name}: {value} is not in {low}..{high}")
        return value

    def number(self, name: str, low: float) -> float | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{name}: {raw!r} is not a number") from None
        if value < low:
            raise ConfigError(f"{ENV_PREFIX}{name}: {value} is below {low}")
        return value


def _list_settings(env: _Env) -> dict[str, Any]:
    """The settings that are lists or references: split, deduplicated where it matters."""
    values: dict[str, Any] = {}
    if (secrets := env.text("PROBE_IMAGE_PULL_SECRETS")) is not None:
        values["probe_image_pull_secrets"] = tuple(
            dict.fromkeys(n.strip() for n in secrets.split(",") if n.strip())
        )
    if (command := env.text("PROBE_COMMAND")) is not None:
        values["probe_command"] = tuple(command.split())
    if (ca := env.text("PUSHGATEWAY_CA_SECRET")) is not None:
        secret, _, key = ca.partition("/")
        values["pushgateway_ca_secret"] = SecretKeyRef(secret, key or "ca.crt")
    for key, name in (
        ("allowed_pushgateway_urls", "ALLOWED_PUSHGATEWAY_URLS"),
        ("allowed_probe_images", "ALLOWED_PROBE_IMAGES"),
    ):
        if (listed := env.text(name)) is not None:
            values[key] = tuple(dict.fromkeys(n.strip() for n in listed.split(",") if n.strip()))
    if (shards := env.text("PUSHGATEWAY_SHARDS")) is not None:
        values["pushgateway_shards"] = tuple(
            dict.fromkeys(u.strip() for u in shards.split(",") if u.strip())
        )
    if (namespaces := env.text("WATCH_NAMESPACES")) is not None:
        values["watch_namespaces"] = tuple(
            sorted({n.strip() for n in namespaces.split(",") if n.strip()})
        )
    return values


def _check_values(values: Mapping[str, Any]) -> None:
    if values.get("probe_image_pull_policy", "IfNotPresent") not in (
        "Always",
        "IfNotPresent",
        "Never",
    ):
        raise ConfigError(f"{ENV_PREFIX}PROBE_IMAGE_PULL_POLICY must be Always|IfNotPresent|Never")
    url = values.get("pushgateway_url")
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{ENV_PREFIX}PUSHGATEWAY_URL must start with http:// or https://")
    for shard in values.get("pushgateway_shards", ()):
        if not is_http_url(shard):
            raise ConfigError(
                f"{ENV_PREFIX}PUSHGATEWAY_SHARDS: {shard!r} is not an http(s) URL with a host"
            )
    for prefix in values.get("allowed_pushgateway_urls", ()):
        if not is_http_url(prefix):
            raise ConfigError(
                f"{ENV_PREFIX}ALLOWED_PUSHGATEWAY_URLS: {prefix!r} is not an http(s) URL with a "
                "host (no user, query or fragment)"
            )


def _replace_operator_namespace(settings: MonitoringSettings, namespace: str) -> MonitoringSettings:
    return dataclasses.replace(settings, operator_namespace=namespace)


# (variable, default, meaning) for the README and the chart; checked against from_env by tests.
ENV_REFERENCE: tuple[tuple[str, str, str], ...] = (
    (
        "TRACEROUTE_PROBE_IMAGE",
        OperatorConfig.probe_image,
        "probe image of probes without spec.image",
    ),
    ("TRACEROUTE_PROBE_IMAGE_PULL_POLICY", "IfNotPresent", "pull policy of the default image"),
    (
        "TRACEROUTE_PROBE_IMAGE_PULL_SECRETS",
        "",
        "comma-separated pull Secrets (in each probe namespace) of probes without spec.image",
    ),
    ("TRACEROUTE_PROBE_COMMAND", "traceroute-probe", "probe container command (space-separated)"),
    ("TRACEROUTE_PROBE_CPU_REQUEST", "20m", "cpu request of probes without spec.resources"),
    ("TRACEROUTE_PROBE_MEMORY_REQUEST", "48Mi", "memory request of probes without spec.resources"),
    ("TRACEROUTE_PROBE_MEMORY_LIMIT", "128Mi", "memory limit of probes without spec.resources"),
    ("TRACEROUTE_PROBE_UID", "65534", "uid (and TRACEROUTE_PROBE_GID gid) of the probe process"),
    (
        "TRACEROUTE_PROBE_START_DELAY_MAX_SECONDS",
        "50",
        "longest wait before the run of a probe with an H schedule (0..50; 0 = none)",
    ),
    ("TRACEROUTE_STARTING_DEADLINE_SECONDS", "120", "CronJob startingDeadlineSeconds"),
    ("TRACEROUTE_SUCCESSFUL_JOBS_HISTORY_LIMIT", "1", "CronJob successfulJobsHistoryLimit"),
    ("TRACEROUTE_FAILED_JOBS_HISTORY_LIMIT", "3", "CronJob failedJobsHistoryLimit"),
    ("TRACEROUTE_JOB_DEADLINE_MARGIN_SECONDS", "120", "Job deadline = spec.timeoutSeconds + this"),
    (
        "TRACEROUTE_PUSHGATEWAY_URL",
        "(in-cluster Service from the monitoring settings)",
        "default Pushgateway",
    ),
    (
        "TRACEROUTE_PUSHGATEWAY_SHARDS",
        "",
        "comma-separated Pushgateway URLs: each probe without spec.pushgateway.url uses one, "
        "by a stable hash of namespace/name (replaces TRACEROUTE_PUSHGATEWAY_URL)",
    ),
    ("TRACEROUTE_PUSHGATEWAY_CA_SECRET", "", "name[/key] of a CA Secret in each probe namespace"),
    (
        "TRACEROUTE_PUSHGATEWAY_BASIC_AUTH_SECRET",
        "",
        "basic-auth Secret (username/password) in each probe namespace",
    ),
    ("TRACEROUTE_PUSHGATEWAY_CA_FILE", "", "CA file the operator uses for the default Pushgateway"),
    ("TRACEROUTE_PUSHGATEWAY_USERNAME_FILE", "", "basic-auth user file of the operator"),
    ("TRACEROUTE_PUSHGATEWAY_PASSWORD_FILE", "", "basic-auth password file of the operator"),
    ("TRACEROUTE_PUSHGATEWAY_TIMEOUT_SECONDS", "5", "timeout of the operator's pushes/deletes"),
    (
        "TRACEROUTE_ALLOWED_PUSHGATEWAY_URLS",
        "",
        "comma-separated URL prefixes spec.pushgateway.url may name (empty: only the default)",
    ),
    (
        "TRACEROUTE_ALLOWED_PROBE_IMAGES",
        "",
        "comma-separated image prefixes spec.image may name (empty: the default's repository)",
    ),
    ("TRACEROUTE_WATCH_NAMESPACES", "", "comma-separated namespaces to watch; empty = all"),
    (
        "TRACEROUTE_OPERATOR_NAMESPACE",
        "traceroute-system",
        "the operator's namespace (shared ServiceMonitor)",
    ),
    ("TRACEROUTE_METRICS_PORT", "8080", "port of the operator's /metrics (0 = off)"),
    (
        "TRACEROUTE_LIVENESS_ENDPOINT",
        "http://0.0.0.0:8081/healthz",
        "kopf liveness endpoint (empty = off)",
    ),
    ("TRACEROUTE_WORKERS", "16", "threads running the sync handlers"),
    ("TRACEROUTE_RESYNC_SECONDS", "600", "re-apply each probe's children this often (0 = never)"),
    ("TRACEROUTE_API_TIMEOUT_SECONDS", "30", "timeout of the operator's API requests"),
)
