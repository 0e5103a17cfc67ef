"""The CRD's CEL rules for URLs and IP literals, enforced by the real apiserver (v1.36).

The apiserver's CEL has the Kubernetes `url()`/`isURL()` and `isIP()` libraries; each rule
names the field in its message. tests/operator/test_operator_controlplane.py has the table of
the other invalid specs; here the Pushgateway URL and the target literals, refused and
accepted, with dry-run creates (nothing is stored).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeError, KubeRest
from devcluster.operator_process import install_crd, probe_manifest, probe_path

pytestmark = pytest.mark.slow

URL_FIELD = "spec.pushgateway.url"
SCHEME = "must be an absolute http:// or https:// URL"
HOST = "must name a host"
HOST_NAME = "host must be a DNS name or an IP address"
PORT = "port must be 1 to 65535"
EXTRAS = "must not carry user info, a query or a fragment"
TARGET_NUMERIC = "end in a numeric label must be valid IP"
TARGET_SHAPE = "must be a hostname or an IP address"

REFUSED_URLS: list[tuple[str, str]] = [
    ("http://pgw:99999", PORT),
    ("http://pgw:65536/", PORT),
    ("http://pgw.example:0", PORT),
    ("http:///nohost", HOST),
    ("https://", HOST),
    ("ftp://x", URL_FIELD),  # 7 characters: the length bound names the field
    ("ftp://pgw.example:21", SCHEME),
    ("file:///etc/passwd", SCHEME),
    ("/metrics/job/x", SCHEME),
    ("pgw.example:9091", SCHEME),
    ("http://[::1", SCHEME),  # not a URL at all: url() cannot parse it
    ("http://pgw:abc", SCHEME),
    ("http://pgw 1:9091", SCHEME),
    ("http://1.2.3.4.5:9091", HOST_NAME),
    ("http://256.1.1.1:9091", HOST_NAME),
    ("http://bad_host.example:9091", HOST_NAME),
    ("http://-pgw.example", HOST_NAME),
    ("http://user:secret@pgw:9091", EXTRAS),
    ("http://pgw:9091/?job=x", EXTRAS),
    ("http://pgw:9091/#top", EXTRAS),
]

ACCEPTED_URLS = [
    "http://pgw:9091",
    "http://pgw:1",
    "https://pgw:65535",
    "https://pushgateway.monitoring.svc.cluster.local:9091/",
    "http://PushGateway.Example.:9091",
    "http://10.96.0.20:9091",
    "http://[fd00::20]:9091",
    "https://[2001:db8::1]/prefix/path",
    "https://pgw.example/a/b%20c",
]

REFUSED_TARGETS: list[tuple[str, str]] = [
    ("1.2.3.4.5", TARGET_NUMERIC),
    ("256.1.1.1", TARGET_NUMERIC),
    ("1.2.3", TARGET_NUMERIC),  # inet_aton would read 1.2.0.3
    ("01.2.3.4", TARGET_NUMERIC),  # octal to inet_aton
    ("10.0.0.1.", TARGET_NUMERIC),
    ("4294967295", TARGET_NUMERIC),  # 255.255.255.255 to inet_aton
    ("0x7f000001", TARGET_NUMERIC),  # 127.0.0.1 to inet_aton
    ("host.example.123", TARGET_NUMERIC),
    ("1.2.3.4/32", TARGET_SHAPE),
    ("fe80::1%eth0", TARGET_SHAPE),
    ("::ffff:192.0.2.1", TARGET_SHAPE),  # isIP refuses IPv4-mapped IPv6: write 192.0.2.1
]

ACCEPTED_TARGETS = [
    "example.org",
    "example.org.",
    "a",
    "1host",
    "123.example.com",
    "0xdead.example",
    "xn--bcher-kva.example",
    "192.0.2.1",
    "255.255.255.255",
    "0.0.0.0",
    "2001:db8::1",
]


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> None:
    install_crd(control_plane.kubeconfig)


def dry_run_create(kube: KubeRest, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return kube.request(
        "POST",
        probe_path(namespace),
        body=probe_manifest("validation", spec),
        params={"dryRun": "All"},
    )


def refusal(kube: KubeRest, namespace: str, spec: dict[str, Any]) -> str:
    with pytest.raises(KubeError) as info:
        dry_run_create(kube, namespace, spec)
    assert info.value.status == 422, info.value.body
    return info.value.body


@pytest.mark.parametrize(("url", "message"), REFUSED_URLS)
def test_bad_pushgateway_urls_are_refused_naming_the_field(
    crds: None, kube: KubeRest, k8s_namespace: str, url: str, message: str
) -> None:
    body = refusal(kube, k8s_namespace, {"targets": ["a"], "pushgateway": {"url": url}})
    assert URL_FIELD in body and message in body, body[:800]


def test_good_pushgateway_urls_are_accepted(crds: None, kube: KubeRest, k8s_namespace: str) -> None:
    for url in ACCEPTED_URLS:
        created = dry_run_create(
            kube, k8s_namespace, {"targets": ["a"], "pushgateway": {"url": url}}
        )
        assert created["spec"]["pushgateway"]["url"] == url


@pytest.mark.parametrize(("target", "message"), REFUSED_TARGETS)
def test_bad_target_literals_are_refused_naming_the_field(
    crds: None, kube: KubeRest, k8s_namespace: str, target: str, message: str
) -> None:
    body = refusal(kube, k8s_namespace, {"targets": ["example.org", target]})
    assert "spec.targets[1]" in body and message in body, body[:800]


def test_hostnames_and_ip_addresses_stay_accepted(
    crds: None, kube: KubeRest, k8s_namespace: str
) -> None:
    created = dry_run_create(kube, k8s_namespace, {"targets": ACCEPTED_TARGETS})
    assert created["spec"]["targets"] == ACCEPTED_TARGETS


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def test_dotted_numbers_are_accepted_exactly_when_they_are_ipv4_addresses(
    crds: None, kube: KubeRest, k8s_namespace: str
) -> None:
    seen = {"accepted": 0, "refused": 0}

    @given(
        st.lists(st.integers(0, 999).map(str), min_size=1, max_size=6).map(".".join)
        | st.tuples(*[st.integers(0, 300)] * 4).map(lambda parts: ".".join(map(str, parts)))
    )
    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    def check(target: str) -> None:
        spec = {"targets": [target]}
        if _is_ipv4(target):
            dry_run_create(kube, k8s_namespace, spec)
            seen["accepted"] += 1
        else:
            body = refusal(kube, k8s_namespace, spec)
            assert "spec.targets[0]" in body and TARGET_NUMERIC in body, (target, body[:600])
            seen["refused"] += 1

    check()
    assert seen["accepted"] > 0 and seen["refused"] > 0, seen
