"""The trust rules (trust.py) applied to one parsed probe, with its Secrets looked up.

Called before the CronJob is built (what the probe pods may mount, pull and contact) and
before each of the operator's own Pushgateway requests (what the operator may contact and
send). The Secret lookup is injected, so the review is testable without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .config import OperatorConfig
from .kube import Kube, KubeError
from .pushgateway_policy import EffectivePushgateway
from .spec import ProbeSpec
from .trust import Refusal, SecretLookup, check_image, check_pushgateway_url, check_secret

LookupSecret = Callable[[str], SecretLookup]


def kube_secret_lookup(kube: Kube, namespace: str) -> LookupSecret:
    """Look a Secret up with the operator's own identity; Forbidden is an answer, not an
    error (the operator holds no cluster-wide right to read Secrets)."""

    def lookup(name: str) -> SecretLookup:
        try:
            return SecretLookup.from_object(kube.get("v1", "secrets", namespace, name))
        except KubeError as exc:
            if exc.forbidden:
                return SecretLookup(found=False, forbidden=True)
            raise

    return lookup


def _named_secrets(spec: ProbeSpec) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(field, Secret name, keys) of every Secret the spec itself names for its Pushgateway.

    The admin's default Secrets (TRACEROUTE_PUSHGATEWAY_*_SECRET) are the admin's choice and
    not reviewed; pull Secrets are covered by the image rule."""
    if (auth := spec.pushgateway.basic_auth) is not None:
        yield (
            "spec.pushgateway.basicAuth",
            auth.secret_name,
            (auth.username_key, auth.password_key),
        )
    if (ca := spec.pushgateway.tls_ca) is not None:
        yield "spec.pushgateway.tlsCA", ca.secret_name, (ca.key,)


def review_pushgateway(
    spec: ProbeSpec,
    pushgateway: EffectivePushgateway,
    config: OperatorConfig,
    namespace: str,
    lookup: LookupSecret,
) -> Refusal | None:
    """May the probe pods and the operator contact this Pushgateway with these Secrets?"""
    if not pushgateway.is_default:
        refusal = check_pushgateway_url(
            pushgateway.url, config.own_pushgateway_urls, config.allowed_pushgateway_urls
        )
        if refusal is not None:
            return refusal
    for field, name, keys in _named_secrets(spec):
        if (refusal := check_secret(field, namespace, name, keys, lookup(name))) is not None:
            return refusal
    return None


def review_probe(
    spec: ProbeSpec,
    pushgateway: EffectivePushgateway,
    config: OperatorConfig,
    namespace: str,
    lookup: LookupSecret,
) -> Refusal | None:
    """The first rule the probe breaks, or None when its CronJob may be built."""
    refusal = check_image(spec.image, config.probe_image, config.probe_image_prefixes)
    if refusal is not None:
        return refusal
    return review_pushgateway(spec, pushgateway, config, namespace, lookup)
