"""The operator's side of the Pushgateway (docs/contracts.md).

The probe pushes what it measured; the operator pushes its ECMP-aware verdict
(``traceroute_path_changes_total``, ``traceroute_path_last_change_timestamp_seconds``) to
its own group, and deletes both groups when the probe is deleted: the Pushgateway never
expires anything by itself.
"""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from traceroute_probe.contract import PUSHGATEWAY_JOB

from .config import OperatorConfig
from .kube import Kube, KubeError
from .naming import OPERATOR_JOB
from .pushgateway_policy import EffectivePushgateway
from .status import parse_iso
from .trust import Refusal, SecretLookup, check_pushgateway_url, check_secret


class PushgatewayError(RuntimeError):
    pass


class PushgatewayRefusedError(PushgatewayError):
    """The trust rules forbid this request: it was not sent."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


@dataclass(frozen=True)
class PushgatewayEndpoint:
    url: str
    ca_pem: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 5.0


def group_url(base: str, job: str, namespace: str, probe: str) -> str:
    """URL of one grouping key; the values are path segments, so they are escaped."""
    segments = [("job", job), ("namespace", namespace), ("probe", probe)]
    path = "/".join(f"{key}/{quote(value, safe='')}" for key, value in segments)
    return f"{base.rstrip('/')}/metrics/{path}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def verdict_exposition(
    targets: Iterable[Mapping[str, Any]], metric_labels: Mapping[str, str]
) -> str:
    """Prometheus text format of the operator's verdict for one probe (pure).

    Every target gets its change counter (0 before the first change), so
    ``increase()``/``changes()`` have a series to work on; the last-change timestamp
    exists once a change happened.
    """
    counter = [
        "# HELP traceroute_path_changes_total Confirmed (ECMP-aware) path changes per target.",
        "# TYPE traceroute_path_changes_total counter",
    ]
    stamp = [
        "# HELP traceroute_path_last_change_timestamp_seconds Time of the last confirmed path "
        "change per target.",
        "# TYPE traceroute_path_last_change_timestamp_seconds gauge",
    ]
    for target in targets:
        name = target.get("name")
        if not isinstance(name, str):
            continue
        labels = _labels({**dict(sorted(metric_labels.items())), "target": name})
        changes = target.get("pathChanges")
        counter.append(
            f"traceroute_path_changes_total{labels} {changes if isinstance(changes, int) else 0}"
        )
        changed_at = parse_iso(target.get("lastChangeTime"))
        if changed_at is not None:
            stamp.append(f"traceroute_path_last_change_timestamp_seconds{labels} {changed_at:.3f}")
    lines = counter + (stamp if len(stamp) > 2 else [])
    return "\n".join(lines) + "\n"


def _request(endpoint: PushgatewayEndpoint, method: str, url: str, body: bytes | None) -> int:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
    if endpoint.username is not None and endpoint.password is not None:
        token = base64.b64encode(f"{endpoint.username}:{endpoint.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = None
    if url.startswith("https://"):
        context = (
            ssl.create_default_context(cadata=endpoint.ca_pem)
            if endpoint.ca_pem
            else (ssl.create_default_context())
        )
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout, context=context) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        detail = exc.read(512).decode("utf-8", errors="replace").strip()
        raise PushgatewayError(f"{method} {url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PushgatewayError(f"{method} {url}: {reason}") from None


def push_verdict(
    endpoint: PushgatewayEndpoint, namespace: str, probe: str, exposition: str
) -> None:
    """PUT the verdict group (replaces it, so removed targets vanish)."""
    url = group_url(endpoint.url, OPERATOR_JOB, namespace, probe)
    _request(endpoint, "PUT", url, exposition.encode())


def delete_groups(endpoint: PushgatewayEndpoint, namespace: str, probe: str) -> None:
    """DELETE the probe's and the operator's group of one probe; raises on the first failure."""
    for job in (PUSHGATEWAY_JOB, OPERATOR_JOB):
        _request(endpoint, "DELETE", group_url(endpoint.url, job, namespace, probe), None)


def operator_endpoint(
    kube: Kube, config: OperatorConfig, namespace: str, pushgateway: EffectivePushgateway
) -> PushgatewayEndpoint:
    """How the operator reaches a probe's Pushgateway.

    The default one with the operator's own files; a probe's own one only when the trust
    rules allow it (an allowed URL, opted-in Secrets the operator may read), with those
    Secrets. Raises PushgatewayRefusedError before any request to a URL the rules refuse.
    """
    if pushgateway.is_default:
        return PushgatewayEndpoint(
            url=pushgateway.url,
            ca_pem=_read_file(config.pushgateway_ca_file, strip=False),
            username=_read_file(config.pushgateway_username_file),
            password=_read_file(config.pushgateway_password_file),
            timeout=config.pushgateway_timeout_seconds,
        )
    refusal = check_pushgateway_url(
        pushgateway.url, config.own_pushgateway_urls, config.allowed_pushgateway_urls
    )
    if refusal is not None:
        raise PushgatewayRefusedError(refusal)
    ca, auth = pushgateway.tls_ca, pushgateway.basic_auth
    try:
        ca_pem = None
        if ca is not None:
            (ca_pem,) = _opted_in_values(
                kube, namespace, "spec.pushgateway.tlsCA", ca.secret_name, (ca.key,)
            )
        username = password = None
        if auth is not None:
            username, password = _opted_in_values(
                kube,
                namespace,
                "spec.pushgateway.basicAuth",
                auth.secret_name,
                (auth.username_key, auth.password_key),
            )
    except KubeError as exc:
        raise PushgatewayError(f"reading the Pushgateway secrets: {exc}") from exc
    return PushgatewayEndpoint(
        pushgateway.url, ca_pem, username, password, config.pushgateway_timeout_seconds
    )


def _read_file(path: str | None, strip: bool = True) -> str | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip() if strip else f.read()


def _opted_in_values(
    kube: Kube, namespace: str, field: str, name: str, keys: tuple[str, ...]
) -> list[str]:
    """The values of ``keys`` of a Secret the trust rules let the operator use."""
    try:
        obj = kube.get("v1", "secrets", namespace, name)
    except KubeError as exc:
        if not exc.forbidden:
            raise
        obj, lookup = None, SecretLookup(found=False, forbidden=True)
    else:
        lookup = SecretLookup.from_object(obj)
    if (refusal := check_secret(field, namespace, name, keys, lookup)) is not None:
        raise PushgatewayRefusedError(refusal)
    data = (obj or {}).get("data") or {}
    return [base64.b64decode(data[key]).decode() for key in keys]
