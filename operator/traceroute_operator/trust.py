"""Trust rules: what a TracerouteProbe may make the operator send, mount or contact.

Whoever may create a TracerouteProbe in a namespace must gain nothing they could not do
already (docs/security.md has the threat model). Every field that names something outside
the object is checked here, by pure functions, before the operator builds a CronJob that
mounts a Secret or pulls an image, and before it contacts a URL itself:

- ``spec.pushgateway.url`` must be the operator's default Pushgateway (any of its shards) or
  match one of the admin's allowed URL prefixes (``TRACEROUTE_ALLOWED_PUSHGATEWAY_URLS``);
- ``spec.image`` must be the default probe image or match one of the admin's allowed image
  prefixes (``TRACEROUTE_ALLOWED_PROBE_IMAGES``; by default the default image's repository);
- a Secret named by ``spec.pushgateway.basicAuth`` or ``spec.pushgateway.tlsCA`` must carry
  the opt-in label ``traceroute.dev/pushgateway-credentials: "true"`` (set by someone who
  may write, and so read, that Secret), and the operator must be allowed to read it (it
  holds no cluster-wide right to read Secrets);
- ``spec.imagePullSecrets`` are handed to the kubelet only with an allowed image, so their
  credentials only ever reach a registry the admin allowed.

A refusal names the field and the rule that refused it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

SECRET_OPT_IN_LABEL = "traceroute.dev/pushgateway-credentials"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Refusal:
    """Why a field of the spec cannot be used: ``reason`` is the rule, CamelCase."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} (rule {self.reason})"


@dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int
    path: str


def _endpoint(url: str) -> _Endpoint | None:
    """Scheme, host, port and path of an http(s) URL; None when it is not one."""
    try:
        parts: SplitResult = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return None
    return _Endpoint(
        scheme=scheme,
        host=parts.hostname.lower().rstrip("."),
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        path="/" + parts.path.strip("/"),
    )


def is_http_url(url: str) -> bool:
    """An http(s) URL with a host, a valid port and no user, query or fragment."""
    return _endpoint(url) is not None


def url_matches(url: str, prefix: str) -> bool:
    """``url`` is ``prefix`` or below it: same scheme, host and port, path on a ``/`` boundary.

    A text prefix would be wrong: ``http://pgw`` must not admit ``http://pgw.evil.example``.
    """
    have, allowed = _endpoint(url), _endpoint(prefix)
    if have is None or allowed is None:
        return False
    if (have.scheme, have.host, have.port) != (allowed.scheme, allowed.host, allowed.port):
        return False
    return allowed.path in ("/", have.path) or have.path.startswith(allowed.path + "/")


def check_pushgateway_url(
    url: str | None, own_urls: Sequence[str], allowed: Sequence[str]
) -> Refusal | None:
    """None when the operator and the probe may contact ``url`` (None = the default).

    ``own_urls``: the operator's own Pushgateways, the default one or every shard of it.
    """
    if url is None or any(url_matches(url, own) for own in own_urls):
        return None
    if any(url_matches(url, prefix) for prefix in allowed):
        return None
    rule = (
        "no other URL is allowed"
        if not allowed
        else "it matches none of " + ", ".join(sorted(allowed))
    )
    return Refusal(
        "spec.pushgateway.url",
        "PushgatewayURLNotAllowed",
        f"{url} is not the operator's Pushgateway, and {rule} (the admin's "
        "TRACEROUTE_ALLOWED_PUSHGATEWAY_URLS, chart value pushgateway.allowedURLs)",
    )


def image_repository(image: str) -> str:
    """The image reference without its tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def image_matches(image: str, prefix: str) -> bool:
    """``image`` lies in the repository ``prefix`` (any tag or digest), or below a
    ``registry/path/`` prefix ending in a slash. Exact prefixes with a tag or digest match
    only themselves."""
    if prefix.endswith("/"):
        return image.startswith(prefix)
    if image_repository(prefix) != prefix:
        return image == prefix
    return image_repository(image) == prefix


def check_image(image: str | None, default_image: str, allowed: Sequence[str]) -> Refusal | None:
    """None when the probe pods may run ``image`` (None = the default image)."""
    if image is None or image == default_image:
        return None
    if any(image_matches(image, prefix) for prefix in allowed):
        return None
    rule = (
        "no other image is allowed"
        if not allowed
        else "it matches none of " + ", ".join(sorted(allowed))
    )
    return Refusal(
        "spec.image",
        "ProbeImageNotAllowed",
        f"{image} is not the operator's probe image, and {rule} (the admin's "
        "TRACEROUTE_ALLOWED_PROBE_IMAGES, chart value probe.allowedImages)",
    )


@dataclass(frozen=True)
class SecretLookup:
    """What the operator could learn of a Secret with its own identity."""

    found: bool
    forbidden: bool = False
    labels: Mapping[str, str] | None = None
    keys: frozenset[str] = frozenset()

    @classmethod
    def from_object(cls, obj: Mapping[str, Any] | None) -> SecretLookup:
        if obj is None:
            return cls(found=False)
        meta = obj.get("metadata") or {}
        return cls(
            found=True,
            labels=dict(meta.get("labels") or {}),
            keys=frozenset((obj.get("data") or {}).keys()),
        )


def check_secret(
    field: str, namespace: str, name: str, keys: Sequence[str], lookup: SecretLookup
) -> Refusal | None:
    """None when the Secret may be mounted into probe pods and used by the operator."""
    where = f"Secret {namespace}/{name}"
    if lookup.forbidden:
        return Refusal(
            field,
            "SecretNotReadable",
            f"the operator may not read {where}: bind the ClusterRole "
            "traceroute-operator-secrets in this namespace (chart value rbac.secretNamespaces)",
        )
    if not lookup.found:
        return Refusal(field, "SecretNotFound", f"{where} does not exist")
    if (lookup.labels or {}).get(SECRET_OPT_IN_LABEL) != "true":
        return Refusal(
            field,
            "SecretNotOptedIn",
            f"{where} lacks the label {SECRET_OPT_IN_LABEL}=true that allows the operator to "
            "use it for Pushgateway credentials",
        )
    missing = sorted(set(keys) - lookup.keys)
    if missing:
        return Refusal(field, "SecretKeyMissing", f"{where} has no key {', '.join(missing)}")
    return None
