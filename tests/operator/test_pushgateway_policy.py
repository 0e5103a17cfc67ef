"""Which Pushgateway a probe uses: the spec's own with its Secrets, else the defaults."""

from __future__ import annotations

from traceroute_operator.config import OperatorConfig, SecretKeyRef
from traceroute_operator.pushgateway_policy import EffectivePushgateway, effective_pushgateway
from traceroute_operator.spec import BasicAuthRef, ProbeSpec

DEFAULTS = OperatorConfig(
    pushgateway_url="https://pgw.monitoring:9091",
    pushgateway_ca_secret=SecretKeyRef("default-ca", "ca.crt"),
    pushgateway_basic_auth_secret="default-auth",
)


def test_the_specs_url_comes_with_only_the_specs_secrets() -> None:
    spec = ProbeSpec.from_dict(
        {"targets": ["a"], "pushgateway": {"url": "http://own:9091", "tlsCA": {"secretName": "c"}}}
    )
    assert effective_pushgateway(spec, DEFAULTS) == EffectivePushgateway(
        "http://own:9091", SecretKeyRef("c", "ca.crt"), None, is_default=False
    )


def test_without_a_url_the_defaults_fill_what_the_spec_leaves_open() -> None:
    spec = ProbeSpec.from_dict(
        {"targets": ["a"], "pushgateway": {"basicAuth": {"secretName": "mine"}}}
    )
    assert effective_pushgateway(spec, DEFAULTS) == EffectivePushgateway(
        "https://pgw.monitoring:9091",
        SecretKeyRef("default-ca", "ca.crt"),
        BasicAuthRef("mine"),
        is_default=True,
    )


def test_an_unreadable_spec_means_the_plain_default() -> None:
    assert effective_pushgateway(None, DEFAULTS) == EffectivePushgateway(
        "https://pgw.monitoring:9091",
        SecretKeyRef("default-ca", "ca.crt"),
        BasicAuthRef("default-auth"),
        is_default=True,
    )
    plain = effective_pushgateway(ProbeSpec(targets=("a",)), OperatorConfig())
    assert plain.url == OperatorConfig().monitoring.pushgateway_url
    assert (plain.tls_ca, plain.basic_auth) == (None, None)
