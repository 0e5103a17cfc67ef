"""Which Pushgateway a probe pushes to, and with which Secrets (pure).

The spec's ``pushgateway.url`` wins with the spec's own Secrets; without it the probe uses
the operator's default Pushgateway, with the spec's Secrets or else the configured default
ones. Computed once per reconcile or run and handed to whoever needs it: the CronJob builder
(flags and mounts of the probe) and the operator's own pushes and deletes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import OperatorConfig, SecretKeyRef
from .spec import BasicAuthRef, ProbeSpec


@dataclass(frozen=True)
class EffectivePushgateway:
    url: str
    tls_ca: SecretKeyRef | None
    basic_auth: BasicAuthRef | None
    # the operator's default Pushgateway: the operator reaches it with its own files,
    # not with the Secrets in the probe's namespace
    is_default: bool


def effective_pushgateway(spec: ProbeSpec | None, config: OperatorConfig) -> EffectivePushgateway:
    """Spec over defaults; ``spec`` None (unreadable) means the operator's default."""
    if spec is not None and (url := spec.pushgateway.url):
        own = spec.pushgateway
        return EffectivePushgateway(url, own.tls_ca, own.basic_auth, is_default=False)
    ca = spec.pushgateway.tls_ca if spec is not None else None
    auth = spec.pushgateway.basic_auth if spec is not None else None
    if auth is None and config.pushgateway_basic_auth_secret:
        auth = BasicAuthRef(config.pushgateway_basic_auth_secret)
    return EffectivePushgateway(
        config.default_pushgateway_url,
        ca or config.pushgateway_ca_secret,
        auth,
        is_default=True,
    )
