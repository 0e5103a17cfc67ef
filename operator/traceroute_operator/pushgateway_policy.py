"""Which Pushgateway a probe pushes to, and with which Secrets (pure).

The spec's ``pushgateway.url`` wins with the spec's own Secrets; without it the probe uses
the operator's default Pushgateway, with the spec's Secrets or else the configured default
ones. With shards (``TRACEROUTE_PUSHGATEWAY_SHARDS``) the default is one of them, picked
by a stable hash of the probe's namespace/name. Computed once per reconcile or run and
handed to whoever needs it: the CronJob builder (flags and mounts of the probe) and the
operator's own pushes and deletes, so the probe's groups and the operator's verdict and
cleanup always meet on the same shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from .config import OperatorConfig, SecretKeyRef
from .ref import ProbeRef
from .spec import BasicAuthRef, ProbeSpec
from .stagger import identity


@dataclass(frozen=True)
class EffectivePushgateway:
    url: str
    tls_ca: SecretKeyRef | None
    basic_auth: BasicAuthRef | None
    # the operator's default Pushgateway: the operator reaches it with its own files,
    # not with the Secrets in the probe's namespace
    is_default: bool


def shard_for(shards: Sequence[str], identity_text: str) -> str:
    """The shard of a probe: rendezvous hashing, so adding a shard moves only 1/N probes.

    Every (shard, probe) pair gets a score; the probe goes to its highest-scoring shard.
    Depends only on the URLs and the identity, not on their order or on the uid.
    """
    if not shards:
        raise ValueError("no Pushgateway shards")

    def score(url: str) -> bytes:
        return hashlib.sha256(f"{url}\0{identity_text}".encode()).digest()

    return max(shards, key=score)


def effective_pushgateway(
    spec: ProbeSpec | None, config: OperatorConfig, probe: ProbeRef
) -> EffectivePushgateway:
    """Spec over defaults; ``spec`` None (unreadable) means the operator's default."""
    if spec is not None and (url := spec.pushgateway.url):
        own = spec.pushgateway
        return EffectivePushgateway(url, own.tls_ca, own.basic_auth, is_default=False)
    ca = spec.pushgateway.tls_ca if spec is not None else None
    auth = spec.pushgateway.basic_auth if spec is not None else None
    if auth is None and config.pushgateway_basic_auth_secret:
        auth = BasicAuthRef(config.pushgateway_basic_auth_secret)
    return EffectivePushgateway(
        shard_for(config.own_pushgateway_urls, identity(probe.namespace, probe.name)),
        ca or config.pushgateway_ca_secret,
        auth,
        is_default=True,
    )
