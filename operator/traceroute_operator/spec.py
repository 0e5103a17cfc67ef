"""The TracerouteProbe spec as a typed value, read defensively.

The apiserver validates and defaults the spec (crds/tracerouteprobes.yaml); the operator
still reads it defensively: objects may predate a schema change, and `render` reads files
that never passed the apiserver. Defaults here equal the CRD's (a test compares them).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The probe refuses these as --label (exit 2): one list, so the operator never accepts a
# metricLabels key that would make every run of the probe fail.
from traceroute_probe.metrics import RESERVED_LABELS

from .config import SecretKeyRef
from .schedule import ScheduleError, max_interval_seconds
from .stagger import resolve_schedule
from .trust import is_http_url

# every 5 minutes, at a minute picked by the probe's identity (stagger.py)
DEFAULT_SCHEDULE = "H/5 * * * *"
_PROM_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")


class SpecError(ValueError):
    """The spec cannot be turned into a CronJob; the message names the field."""


@dataclass(frozen=True)
class BasicAuthRef:
    secret_name: str
    username_key: str = "username"
    password_key: str = "password"


@dataclass(frozen=True)
class PushgatewaySpec:
    url: str | None = None
    tls_ca: SecretKeyRef | None = None
    basic_auth: BasicAuthRef | None = None


@dataclass(frozen=True)
class ProbeSpec:
    targets: tuple[str, ...]
    schedule: str = DEFAULT_SCHEDULE
    time_zone: str | None = None
    protocol: str = "icmp"
    port: int | None = None
    ip_family: str = "auto"
    max_hops: int = 30
    flows: int = 3
    probes_per_hop: int = 3
    timeout_seconds: int = 10
    packets_per_second: int = 200
    expected_hops: int | None = None
    expected_hops_by_target: Mapping[str, int] = field(default_factory=dict)
    confirm_runs: int = 2
    suspend: bool = False
    pushgateway: PushgatewaySpec = field(default_factory=PushgatewaySpec)
    metric_labels: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    image_pull_policy: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    resources: Mapping[str, Any] | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None

    def expected_hops_for(self, target: str) -> int | None:
        return self.expected_hops_by_target.get(target, self.expected_hops)

    @classmethod
    def from_dict(cls, spec: Any) -> ProbeSpec:
        if not isinstance(spec, Mapping):
            raise SpecError("spec: must be an object")
        targets = _targets(spec.get("targets"))
        protocol = _enum(spec, "protocol", ("icmp", "udp", "tcp"), "icmp")
        port = _int(spec, "port", 1, 65535, None)
        if port is not None and protocol == "icmp":
            raise SpecError("spec.port: only valid when spec.protocol is udp or tcp")
        max_hops = _int(spec, "maxHops", 1, 64, 30)
        expected = _int(spec, "expectedHops", 1, 64, None)
        if expected is not None and expected > max_hops:
            raise SpecError("spec.expectedHops: must not exceed spec.maxHops")
        by_target = _expected_hops_by_target(spec.get("expectedHopsByTarget"), targets, max_hops)
        ip_family = str(spec.get("ipFamily", "auto"))
        if ip_family not in ("auto", "4", "6"):
            raise SpecError("spec.ipFamily: must be auto, 4 or 6")
        path_change = spec.get("pathChange") or {}
        if not isinstance(path_change, Mapping):
            raise SpecError("spec.pathChange: must be an object")
        schedule = _schedule(spec.get("schedule", DEFAULT_SCHEDULE))
        time_zone = spec.get("timeZone")
        if time_zone is not None and (not isinstance(time_zone, str) or not time_zone):
            raise SpecError("spec.timeZone: must be an IANA time zone name")
        suspend = spec.get("suspend", False)
        if not isinstance(suspend, bool):
            raise SpecError("spec.suspend: must be true or false")
        image = spec.get("image")
        if image is not None and (not isinstance(image, str) or not image.strip()):
            raise SpecError("spec.image: must be an image reference")
        pull_policy = spec.get("imagePullPolicy")
        if pull_policy is not None and pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise SpecError("spec.imagePullPolicy: must be Always, IfNotPresent or Never")
        resources = _object(spec, "resources")
        affinity = _object(spec, "affinity")
        return cls(
            targets=targets,
            schedule=schedule,
            time_zone=time_zone,
            protocol=protocol,
            port=port,
            ip_family=ip_family,
            max_hops=max_hops,
            flows=_int(spec, "flows", 1, 16, 3),
            probes_per_hop=_int(spec, "probesPerHop", 1, 10, 3),
            timeout_seconds=_int(spec, "timeoutSeconds", 1, 300, 10),
            packets_per_second=_int(spec, "packetsPerSecond", 1, 10000, 200),
            expected_hops=expected,
            expected_hops_by_target=by_target,
            confirm_runs=_int(path_change, "confirmRuns", 1, 10, 2, prefix="spec.pathChange."),
            suspend=suspend,
            pushgateway=_pushgateway(spec.get("pushgateway")),
            metric_labels=_metric_labels(spec.get("metricLabels")),
            image=image,
            image_pull_policy=pull_policy,
            image_pull_secrets=_pull_secrets(spec.get("imagePullSecrets")),
            resources=resources,
            node_selector=_string_map(spec.get("nodeSelector"), "spec.nodeSelector"),
            tolerations=_tolerations(spec.get("tolerations")),
            affinity=affinity,
        )


def _targets(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise SpecError("spec.targets: must list 1 to 64 hostnames or IP addresses")
    if len(raw) > 64:
        raise SpecError("spec.targets: at most 64 targets")
    targets: list[str] = []
    for item in raw:
        if not isinstance(item, str) or not item.strip() or len(item) > 253:
            raise SpecError(f"spec.targets: {item!r} is not a hostname or IP address")
        if item.startswith("-") or any(c.isspace() for c in item):
            # would be read as a CLI option or split into two arguments
            raise SpecError(f"spec.targets: {item!r} is not a hostname or IP address")
        if _numeric_but_not_ip(item):
            raise SpecError(f"spec.targets: {item!r} looks like an IPv4 address but is not one")
        if item not in targets:
            targets.append(item)
    return tuple(targets)


def _numeric_but_not_ip(name: str) -> bool:
    """A name whose last label is numeric is read as an IPv4 address by resolvers: it must be
    one (the CRD refuses the rest, e.g. 1.2.3.4.5, 256.1.1.1, 0x7f000001)."""
    last = name.rstrip(".").rsplit(".", 1)[-1]
    if ":" in name or not (last.isdigit() or last.lower().startswith("0x")):
        return False
    try:
        return str(ipaddress.IPv4Address(name)) != name
    except ValueError:
        return True


def _expected_hops_by_target(raw: Any, targets: tuple[str, ...], max_hops: int) -> dict[str, int]:
    if not raw:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError("spec.expectedHopsByTarget: must be an object")
    by_target: dict[str, int] = {}
    for target, hops in raw.items():
        if target not in targets:
            raise SpecError(f"spec.expectedHopsByTarget: {target!r} is not in spec.targets")
        if isinstance(hops, bool) or not isinstance(hops, int) or not 1 <= hops <= max_hops:
            raise SpecError(f"spec.expectedHopsByTarget[{target}]: must be 1..spec.maxHops")
        by_target[str(target)] = hops
    return by_target


def _schedule(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 128:
        raise SpecError("spec.schedule: must be a cron expression")
    # the CRD checks only the shape ("61 * * * *" passes); a schedule that cannot run
    # must stall the probe with this message, not fail every reconcile later
    # (an H form fires, or not, whatever identity picks its values)
    try:
        max_interval_seconds(resolve_schedule(raw, "check/only"))
    except ScheduleError as exc:
        raise SpecError(f"spec.schedule: {exc}") from exc
    return raw.strip()


def _object(spec: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = spec.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise SpecError(f"spec.{key}: must be an object")
    return value


def _int(  # noqa: PLR0917 (a table of bounds reads best positionally)
    spec: Mapping[str, Any],
    key: str,
    low: int,
    high: int,
    default: int | None,
    prefix: str = "spec.",
) -> Any:
    value = spec.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(f"{prefix}{key}: must be an integer in {low}..{high}")
    return value


def _enum(spec: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = spec.get(key, default)
    if value not in allowed:
        raise SpecError(f"spec.{key}: must be one of {', '.join(allowed)}")
    return str(value)


def _secret_name(raw: Mapping[str, Any], where: str) -> str:
    name = raw.get("secretName")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}.secretName: required")
    return name


def _pushgateway(raw: Any) -> PushgatewaySpec:
    if raw is None:
        return PushgatewaySpec()
    if not isinstance(raw, Mapping):
        raise SpecError("spec.pushgateway: must be an object")
    url = raw.get("url")
    if url is not None and (not isinstance(url, str) or not is_http_url(url)):
        # the CRD's rules, for objects that never passed the apiserver (render)
        raise SpecError(
            "spec.pushgateway.url: must be an http:// or https:// URL with a host and a port "
            "in 1..65535, without user, query or fragment"
        )
    tls_ca = None
    if (ca := raw.get("tlsCA")) is not None:
        if not isinstance(ca, Mapping):
            raise SpecError("spec.pushgateway.tlsCA: must be an object")
        tls_ca = SecretKeyRef(
            _secret_name(ca, "spec.pushgateway.tlsCA"), str(ca.get("key") or "ca.crt")
        )
    basic = None
    if (auth := raw.get("basicAuth")) is not None:
        if not isinstance(auth, Mapping):
            raise SpecError("spec.pushgateway.basicAuth: must be an object")
        basic = BasicAuthRef(
            _secret_name(auth, "spec.pushgateway.basicAuth"),
            str(auth.get("usernameKey") or "username"),
            str(auth.get("passwordKey") or "password"),
        )
    return PushgatewaySpec(url=url, tls_ca=tls_ca, basic_auth=basic)


def _metric_labels(raw: Any) -> dict[str, str]:
    labels = _string_map(raw, "spec.metricLabels")
    if len(labels) > 8:
        raise SpecError("spec.metricLabels: at most 8 labels")
    for key, value in labels.items():
        if not _PROM_LABEL.match(key) or key.startswith("__") or key in RESERVED_LABELS:
            raise SpecError(f"spec.metricLabels: {key!r} is not an allowed label name")
        if len(value) > 128:
            raise SpecError(f"spec.metricLabels[{key}]: at most 128 characters")
    return labels


def _string_map(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise SpecError(f"{where}: must map strings to strings")
    return dict(raw)


def _pull_secrets(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise SpecError("spec.imagePullSecrets: must be a list of {name: ...}")
    names = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise SpecError("spec.imagePullSecrets: every entry needs a name")
        names.append(item["name"])
    return tuple(names)


def _tolerations(raw: Any) -> tuple[Mapping[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise SpecError("spec.tolerations: must be a list")
    if not all(isinstance(t, Mapping) for t in raw):
        raise SpecError("spec.tolerations: every entry must be an object")
    return tuple(dict(t) for t in raw)
