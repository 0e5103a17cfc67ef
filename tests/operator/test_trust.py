"""The trust rules, as pure functions (the real-cluster attempt is in test_security.py)."""

from __future__ import annotations

import pytest
from traceroute_operator.trust import (
    SECRET_OPT_IN_LABEL,
    SecretLookup,
    check_image,
    check_pushgateway_url,
    check_secret,
    image_matches,
    image_repository,
    url_matches,
)

DEFAULT_URL = "http://traceroute-pushgateway.traceroute-system.svc:9091"


@pytest.mark.parametrize(
    ("url", "prefix", "expected"),
    [
        ("http://pgw:9091", "http://pgw:9091", True),
        ("http://pgw:9091/", "http://pgw:9091", True),
        ("http://PGW:9091", "http://pgw:9091", True),
        ("http://pgw:9091/tenant/a", "http://pgw:9091/tenant", True),
        ("http://pgw:9091/tenant", "http://pgw:9091/tenant/", True),
        ("https://pgw", "https://pgw:443", True),
        ("http://pgw:80", "http://pgw", True),
        # a text prefix would admit these
        ("http://pgw.evil.example:9091", "http://pgw", False),
        ("http://pgw:90910", "http://pgw:9091", False),
        ("http://pgw:9091/tenantx", "http://pgw:9091/tenant", False),
        ("http://pgw@evil.example:9091", "http://pgw:9091", False),
        ("http://user:pw@pgw:9091", "http://pgw:9091", False),
        ("https://pgw:9091", "http://pgw:9091", False),
        ("http://pgw:9092", "http://pgw:9091", False),
        ("ftp://pgw:9091", "http://pgw:9091", False),
        ("http://pgw:99999", "http://pgw:99999", False),
        ("http:///nohost", "http:///nohost", False),
        ("http://[::1", "http://[::1", False),
        ("http://pgw:9091?x=1", "http://pgw:9091", False),
    ],
)
def test_url_matches_on_scheme_host_port_and_path_segments(
    url: str, prefix: str, expected: bool
) -> None:
    assert url_matches(url, prefix) is expected


def test_default_pushgateway_needs_no_allowlist() -> None:
    assert check_pushgateway_url(None, (DEFAULT_URL,), ()) is None
    assert check_pushgateway_url(DEFAULT_URL + "/", (DEFAULT_URL,), ()) is None


def test_other_pushgateway_is_refused_naming_field_and_rule() -> None:
    refusal = check_pushgateway_url("http://attacker.example:9091", (DEFAULT_URL,), ())
    assert refusal is not None
    assert refusal.field == "spec.pushgateway.url"
    assert refusal.reason == "PushgatewayURLNotAllowed"
    assert "no other URL is allowed" in refusal.message
    assert "pushgateway.allowedURLs" in str(refusal)


def test_allowlisted_pushgateway_is_accepted_and_others_named() -> None:
    allowed = ("https://pgw.monitoring.svc:9091",)
    assert check_pushgateway_url("https://pgw.monitoring.svc:9091", (DEFAULT_URL,), allowed) is None
    refusal = check_pushgateway_url("https://pgw.monitoring.svc:9092", (DEFAULT_URL,), allowed)
    assert refusal is not None
    assert "https://pgw.monitoring.svc:9091" in refusal.message


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("ghcr.io/t/probe:1.0", "ghcr.io/t/probe"),
        ("ghcr.io/t/probe@sha256:" + "a" * 64, "ghcr.io/t/probe"),
        ("ghcr.io/t/probe:1.0@sha256:" + "a" * 64, "ghcr.io/t/probe"),
        ("registry:5443/t/probe", "registry:5443/t/probe"),
        ("registry:5443/t/probe:2", "registry:5443/t/probe"),
        ("probe", "probe"),
    ],
)
def test_image_repository_drops_tag_and_digest(image: str, repository: str) -> None:
    assert image_repository(image) == repository


@pytest.mark.parametrize(
    ("image", "prefix", "expected"),
    [
        ("ghcr.io/t/probe:1.1", "ghcr.io/t/probe", True),
        ("ghcr.io/t/probe@sha256:" + "b" * 64, "ghcr.io/t/probe", True),
        ("ghcr.io/t/probe-evil:1", "ghcr.io/t/probe", False),
        ("ghcr.io/t/probe/sub:1", "ghcr.io/t/probe", False),
        ("ghcr.io/t/anything:1", "ghcr.io/t/", True),
        ("ghcr.io/tx/anything:1", "ghcr.io/t/", False),
        ("ghcr.io/t/probe:1.0", "ghcr.io/t/probe:1.0", True),
        ("ghcr.io/t/probe:1.1", "ghcr.io/t/probe:1.0", False),
        ("evil.example/t/probe:1", "ghcr.io/t/probe", False),
    ],
)
def test_image_matches_repositories_not_text(image: str, prefix: str, expected: bool) -> None:
    assert image_matches(image, prefix) is expected


def test_image_check() -> None:
    default = "ghcr.io/t/probe:1.0"
    assert check_image(None, default, ()) is None
    assert check_image(default, default, ()) is None
    assert check_image("ghcr.io/t/probe:1.1", default, ("ghcr.io/t/probe",)) is None
    refusal = check_image("attacker.example/x:latest", default, ("ghcr.io/t/probe",))
    assert refusal is not None
    assert (refusal.field, refusal.reason) == ("spec.image", "ProbeImageNotAllowed")
    assert "probe.allowedImages" in refusal.message


def _lookup(labels: dict[str, str] | None, keys: tuple[str, ...] = ("username", "password")):
    return SecretLookup.from_object(
        {"metadata": {"name": "s", "labels": labels}, "data": {k: "eA==" for k in keys}}
    )


@pytest.mark.parametrize(
    ("lookup", "reason"),
    [
        (SecretLookup(found=False, forbidden=True), "SecretNotReadable"),
        (SecretLookup(found=False), "SecretNotFound"),
        (_lookup(None), "SecretNotOptedIn"),
        (_lookup({SECRET_OPT_IN_LABEL: "yes"}), "SecretNotOptedIn"),
        (_lookup({SECRET_OPT_IN_LABEL: "true"}, ("username",)), "SecretKeyMissing"),
    ],
)
def test_secret_refusals_name_the_rule(lookup: SecretLookup, reason: str) -> None:
    refusal = check_secret(
        "spec.pushgateway.basicAuth", "team-a", "s", ("username", "password"), lookup
    )
    assert refusal is not None
    assert refusal.reason == reason
    assert refusal.field == "spec.pushgateway.basicAuth"
    assert "team-a/s" in refusal.message


def test_opted_in_secret_is_usable_and_its_values_are_never_kept() -> None:
    lookup = _lookup({SECRET_OPT_IN_LABEL: "true"})
    assert check_secret("f", "ns", "s", ("username", "password"), lookup) is None
    assert "eA==" not in repr(lookup)
