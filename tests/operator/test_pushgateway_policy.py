"""Which Pushgateway a probe uses: the spec's own with its Secrets, else the defaults."""

from __future__ import annotations

import collections

import pytest
from traceroute_operator.config import OperatorConfig, SecretKeyRef
from traceroute_operator.pushgateway_policy import (
    EffectivePushgateway,
    effective_pushgateway,
    shard_for,
)
from traceroute_operator.ref import ProbeRef
from traceroute_operator.spec import BasicAuthRef, ProbeSpec
from traceroute_operator.trust import check_pushgateway_url

DEFAULTS = OperatorConfig(
    pushgateway_url="https://pgw.monitoring:9091",
    pushgateway_ca_secret=SecretKeyRef("default-ca", "ca.crt"),
    pushgateway_basic_auth_secret="default-auth",
)


REF = ProbeRef("net", "edge", "uid-1")
SHARDS = tuple(f"http://pgw-{i}.monitoring.svc:9091" for i in range(4))
SHARDED = OperatorConfig(pushgateway_shards=SHARDS)


def test_the_specs_url_comes_with_only_the_specs_secrets() -> None:
    spec = ProbeSpec.from_dict(
        {"targets": ["a"], "pushgateway": {"url": "http://own:9091", "tlsCA": {"secretName": "c"}}}
    )
    assert effective_pushgateway(spec, DEFAULTS, REF) == EffectivePushgateway(
        "http://own:9091", SecretKeyRef("c", "ca.crt"), None, is_default=False
    )


def test_without_a_url_the_defaults_fill_what_the_spec_leaves_open() -> None:
    spec = ProbeSpec.from_dict(
        {"targets": ["a"], "pushgateway": {"basicAuth": {"secretName": "mine"}}}
    )
    assert effective_pushgateway(spec, DEFAULTS, REF) == EffectivePushgateway(
        "https://pgw.monitoring:9091",
        SecretKeyRef("default-ca", "ca.crt"),
        BasicAuthRef("mine"),
        is_default=True,
    )


def test_an_unreadable_spec_means_the_plain_default() -> None:
    assert effective_pushgateway(None, DEFAULTS, REF) == EffectivePushgateway(
        "https://pgw.monitoring:9091",
        SecretKeyRef("default-ca", "ca.crt"),
        BasicAuthRef("default-auth"),
        is_default=True,
    )
    plain = effective_pushgateway(ProbeSpec(targets=("a",)), OperatorConfig(), REF)
    assert plain.url == OperatorConfig().monitoring.pushgateway_url
    assert (plain.tls_ca, plain.basic_auth) == (None, None)


def _shard(config: OperatorConfig, namespace: str, name: str, uid: str | None = None) -> str:
    return effective_pushgateway(None, config, ProbeRef(namespace, name, uid)).url


def test_shards_split_probes_evenly_and_stably() -> None:
    names = [(f"ns-{i % 5}", f"probe-{i}") for i in range(4000)]
    counts = collections.Counter(_shard(SHARDED, ns, n) for ns, n in names)
    assert set(counts) == set(SHARDS)
    assert all(800 <= c <= 1200 for c in counts.values()), counts
    # the same probe, re-created (new uid) or asked again, lands on the same shard
    assert _shard(SHARDED, "ns-1", "probe-1", "a") == _shard(SHARDED, "ns-1", "probe-1", "b")
    # the order of the list is not part of the assignment
    reordered = OperatorConfig(pushgateway_shards=tuple(reversed(SHARDS)))
    assert all(_shard(SHARDED, ns, n) == _shard(reordered, ns, n) for ns, n in names[:500])


def test_adding_a_shard_moves_only_the_probes_it_takes() -> None:
    names = [(f"ns-{i % 5}", f"probe-{i}") for i in range(4000)]
    more = OperatorConfig(pushgateway_shards=(*SHARDS, "http://pgw-4.monitoring.svc:9091"))
    moved = [(ns, n) for ns, n in names if _shard(SHARDED, ns, n) != _shard(more, ns, n)]
    assert all(_shard(more, ns, n) == "http://pgw-4.monitoring.svc:9091" for ns, n in moved)
    assert 600 <= len(moved) <= 1000  # about 1/5


def test_without_shards_every_probe_uses_the_default() -> None:
    config = OperatorConfig(pushgateway_url="https://pgw:9091")
    assert {_shard(config, "a", f"p{i}") for i in range(50)} == {"https://pgw:9091"}
    with pytest.raises(ValueError, match="no Pushgateway shards"):
        shard_for((), "a/b")


def test_every_shard_is_the_operators_own_for_the_trust_rules() -> None:
    for shard in SHARDS:
        assert check_pushgateway_url(shard, SHARDED.own_pushgateway_urls, ()) is None
    refusal = check_pushgateway_url(
        "http://pgw-9.monitoring.svc:9091", SHARDED.own_pushgateway_urls, ()
    )
    assert refusal is not None and refusal.reason == "PushgatewayURLNotAllowed"


def test_shards_come_from_the_environment_and_must_be_urls() -> None:
    config = OperatorConfig.from_env(
        {"TRACEROUTE_PUSHGATEWAY_SHARDS": " http://a:9091, http://b:9091 ,http://a:9091"}
    )
    assert config.pushgateway_shards == ("http://a:9091", "http://b:9091")
    assert config.own_pushgateway_urls == ("http://a:9091", "http://b:9091")
    with pytest.raises(ValueError, match="PUSHGATEWAY_SHARDS"):
        OperatorConfig.from_env({"TRACEROUTE_PUSHGATEWAY_SHARDS": "a:9091"})
