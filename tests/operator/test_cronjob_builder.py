"""build_cronjob: a pure function of the parsed probe, its Pushgateway and the configuration."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from traceroute_operator.builders.cronjob import build_cronjob, probe_args
from traceroute_operator.config import OperatorConfig, SecretKeyRef
from traceroute_operator.naming import CRONJOB_NAME_LIMIT, cronjob_name
from traceroute_operator.pushgateway_policy import effective_pushgateway
from traceroute_operator.ref import ProbeRef
from traceroute_operator.spec import ProbeSpec, SpecError
from traceroute_operator.stagger import identity, resolve_schedule, start_delay_seconds

from tests.operator.probes import parsed

CONFIG = OperatorConfig(probe_image="registry.example:5000/traceroute-probe:1.2.3")


def probe(
    spec: dict[str, Any] | None = None, name: str = "edge", uid: str | None = "uid-1"
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "net"}
    if uid:
        meta["uid"] = uid
    return {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "metadata": meta,
        "spec": spec if spec is not None else {"targets": ["example.org"]},
    }


def build(body: dict[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """Parse at the edge, then build: what the operator and `render` do."""
    ref, spec = parsed(body)
    return build_cronjob(ref, spec, effective_pushgateway(spec, config, ref), config)


def pod_spec(cronjob: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def test_same_input_same_manifest_and_input_untouched() -> None:
    body = probe({"targets": ["a.example", "10.0.0.1"], "metricLabels": {"b": "2", "a": "1"}})
    before = copy.deepcopy(body)
    assert build(body, CONFIG) == build(copy.deepcopy(body), CONFIG)
    assert body == before


def test_identity_owner_and_labels() -> None:
    cronjob = build(probe(), CONFIG)
    meta = cronjob["metadata"]
    assert meta["name"] == "trp-edge" and meta["namespace"] == "net"
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "name": "edge",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pod_labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["traceroute.dev/probe"] == "edge"
    assert pod_labels["traceroute.dev/probe-uid"] == "uid-1"
    assert pod_labels["app.kubernetes.io/managed-by"] == "traceroute-operator"


def test_no_owner_reference_without_uid() -> None:
    assert "ownerReferences" not in build(probe(uid=None), CONFIG)["metadata"]


def test_long_names_stay_valid_and_distinct() -> None:
    a = cronjob_name("x" * 63)
    b = cronjob_name("x" * 62 + "y")
    assert len(a) <= CRONJOB_NAME_LIMIT and len(b) <= CRONJOB_NAME_LIMIT
    assert a != b and a == cronjob_name("x" * 63)


def test_schedule_policy_and_history() -> None:
    spec = build(
        probe(
            {
                "targets": ["a"],
                "schedule": "*/2 * * * *",
                "timeZone": "Europe/Berlin",
                "timeoutSeconds": 20,
            }
        ),
        CONFIG,
    )["spec"]
    assert spec["schedule"] == "*/2 * * * *"
    assert spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == CONFIG.starting_deadline_seconds
    assert spec["successfulJobsHistoryLimit"] == CONFIG.successful_jobs_history_limit
    assert spec["failedJobsHistoryLimit"] == CONFIG.failed_jobs_history_limit
    assert spec["suspend"] is False
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert job["activeDeadlineSeconds"] == 20 + CONFIG.job_deadline_margin_seconds


def test_h_schedule_is_resolved_from_the_identity_with_a_start_delay() -> None:
    default = build(probe({"targets": ["a"], "timeoutSeconds": 20}), CONFIG)
    ref = ProbeRef("net", "edge")
    assert default["spec"]["schedule"] == resolve_schedule("H/5 * * * *", identity("net", "edge"))
    assert "H" not in default["spec"]["schedule"]
    delay = start_delay_seconds("H/5 * * * *", identity(ref.namespace, ref.name), 20)
    args = pod_spec(default)["containers"][0]["args"]
    assert arg_value(args, "--start-delay-seconds") == ([str(delay)] if delay else [])
    job = default["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 20 + delay + CONFIG.job_deadline_margin_seconds
    # the uid is not part of the identity: a re-created probe keeps its minute
    again = build(probe({"targets": ["a"], "timeoutSeconds": 20}, uid="uid-2"), CONFIG)
    assert again["spec"]["schedule"] == default["spec"]["schedule"]
    # an explicit schedule keeps its exact start: no delay
    plain = build(probe({"targets": ["a"], "schedule": "*/5 * * * *"}), CONFIG)
    assert "--start-delay-seconds" not in pod_spec(plain)["containers"][0]["args"]


def test_probes_get_spread_start_delays() -> None:
    delays: set[str] = set()
    for i in range(40):
        args = pod_spec(build(probe(name=f"p{i}"), CONFIG))["containers"][0]["args"]
        delays.update(arg_value(args, "--start-delay-seconds"))
    assert len(delays) > 10


def test_suspend_is_honoured() -> None:
    assert build(probe({"targets": ["a"], "suspend": True}), CONFIG)["spec"]["suspend"] is True


def test_pod_security_restricted_and_unprivileged_ping() -> None:
    pod = pod_spec(build(probe(), CONFIG))
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    sec = pod["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] == 65534 and sec["runAsGroup"] == 65534
    assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sec["sysctls"] == [{"name": "net.ipv4.ping_group_range", "value": "65534 65534"}]
    (container,) = pod["containers"]
    csec = container["securityContext"]
    assert csec["allowPrivilegeEscalation"] is False
    assert csec["capabilities"] == {"drop": ["ALL"]}
    assert csec["readOnlyRootFilesystem"] is True
    assert csec["runAsNonRoot"] is True
    assert container["terminationMessagePath"] == "/dev/termination-log"
    # the log tail only when a failed probe wrote no result (its stderr line reaches status)
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["image"] == CONFIG.probe_image


def arg_value(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[: args.index("--")]) if a == flag]


def test_args_follow_the_probe_cli() -> None:
    spec = ProbeSpec.from_dict(
        {
            "targets": ["a.example", "2001:db8::1"],
            "protocol": "tcp",
            "port": 443,
            "ipFamily": 6,
            "maxHops": 20,
            "flows": 4,
            "probesPerHop": 2,
            "timeoutSeconds": 15,
            "packetsPerSecond": 50,
            "expectedHops": 7,
            "expectedHopsByTarget": {"2001:db8::1": 9},
            "metricLabels": {"team": "net", "env": "prod"},
        }
    )
    args = probe_args(
        ProbeRef("net", "edge"), spec, effective_pushgateway(spec, CONFIG, ProbeRef("net", "edge"))
    )
    assert args[args.index("--") + 1 :] == ["a.example", "2001:db8::1"]
    expected = {
        "--protocol": ["tcp"],
        "--port": ["443"],
        "--ip-family": ["6"],
        "--max-hops": ["20"],
        "--flows": ["4"],
        "--probes-per-hop": ["2"],
        "--timeout": ["15"],
        "--pps": ["50"],
        "--namespace": ["net"],
        "--probe": ["edge"],
        "--pushgateway": [CONFIG.default_pushgateway_url],
        "--label": ["env=prod", "team=net"],
        "--expected-hops": ["7", "2001:db8::1=9"],
        "--termination-log": ["/dev/termination-log"],
    }
    for flag, values in expected.items():
        assert arg_value(args, flag) == values, flag


def test_pushgateway_override_mounts_secrets_as_files() -> None:
    body = probe(
        {
            "targets": ["a"],
            "pushgateway": {
                "url": "https://pgw.example:9091",
                "tlsCA": {"secretName": "pgw-ca", "key": "root.pem"},
                "basicAuth": {"secretName": "pgw-auth"},
            },
        }
    )
    cronjob = build(body, CONFIG)
    pod = pod_spec(cronjob)
    args = pod["containers"][0]["args"]
    assert arg_value(args, "--pushgateway") == ["https://pgw.example:9091"]
    ca_file = arg_value(args, "--pushgateway-ca")[0]
    user_file = arg_value(args, "--pushgateway-username-file")[0]
    password_file = arg_value(args, "--pushgateway-password-file")[0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pushgateway-ca"]["secret"]["secretName"] == "pgw-ca"
    assert volumes["pushgateway-ca"]["secret"]["items"] == [{"key": "root.pem", "path": "ca.crt"}]
    assert volumes["pushgateway-auth"]["secret"]["items"] == [
        {"key": "username", "path": "username"},
        {"key": "password", "path": "password"},
    ]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert ca_file == mounts["pushgateway-ca"] + "/ca.crt"
    assert user_file == mounts["pushgateway-auth"] + "/username"
    assert password_file == mounts["pushgateway-auth"] + "/password"


def test_default_pushgateway_secrets_from_config() -> None:
    config = OperatorConfig(
        pushgateway_url="https://pgw.monitoring:9091",
        pushgateway_ca_secret=SecretKeyRef("pgw-ca", "ca.crt"),
        pushgateway_basic_auth_secret="pgw-auth",
    )
    pod = pod_spec(build(probe(), config))
    args = pod["containers"][0]["args"]
    assert arg_value(args, "--pushgateway") == ["https://pgw.monitoring:9091"]
    assert arg_value(args, "--pushgateway-ca") and arg_value(args, "--pushgateway-username-file")


def test_pod_knobs() -> None:
    knobs = {
        "targets": ["a"],
        "image": "mirror.example/traceroute-probe@sha256:" + "a" * 64,
        "imagePullPolicy": "Always",
        "imagePullSecrets": [{"name": "mirror-creds"}],
        "resources": {"requests": {"cpu": "5m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
    }
    pod = pod_spec(build(probe(knobs), CONFIG))
    container = pod["containers"][0]
    assert container["image"] == knobs["image"]
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == knobs["resources"]
    assert pod["imagePullSecrets"] == [{"name": "mirror-creds"}]
    assert pod["nodeSelector"] == knobs["nodeSelector"]
    assert pod["tolerations"] == knobs["tolerations"]
    assert pod["affinity"] == knobs["affinity"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec.targets"),
        ({"targets": []}, "spec.targets"),
        ({"targets": ["-rf"]}, "spec.targets"),
        ({"targets": ["a b"]}, "spec.targets"),
        ({"targets": ["a"], "port": 80}, "spec.port"),
        ({"targets": ["a"], "maxHops": 0}, "spec.maxHops"),
        ({"targets": ["a"], "flows": True}, "spec.flows"),
        ({"targets": ["a"], "expectedHops": 40, "maxHops": 30}, "spec.expectedHops"),
        ({"targets": ["a"], "expectedHopsByTarget": {"b": 3}}, "spec.expectedHopsByTarget"),
        ({"targets": ["a"], "metricLabels": {"target": "x"}}, "spec.metricLabels"),
        ({"targets": ["a"], "metricLabels": {"__x": "x"}}, "spec.metricLabels"),
        ({"targets": ["a"], "ipFamily": "7"}, "spec.ipFamily"),
        ({"targets": ["a"], "pathChange": {"confirmRuns": 0}}, "spec.pathChange.confirmRuns"),
        ({"targets": ["a"], "pushgateway": {"url": "ftp://x"}}, "spec.pushgateway.url"),
        ({"targets": ["a"], "pushgateway": {"url": "not a url"}}, "spec.pushgateway.url"),
        ({"targets": ["a"], "pushgateway": {"url": "http://pgw:99999"}}, "spec.pushgateway.url"),
        ({"targets": ["a"], "pushgateway": {"url": "http:///nohost"}}, "spec.pushgateway.url"),
        ({"targets": ["a"], "pushgateway": {"url": "http://[::1"}}, "spec.pushgateway.url"),
        ({"targets": ["a"], "pushgateway": {"url": "http://u:p@pgw:9091"}}, "spec.pushgateway.url"),
        ({"targets": ["1.2.3.4.5"]}, "spec.targets"),
        ({"targets": ["256.1.1.1"]}, "spec.targets"),
        ({"targets": ["0x7f000001"]}, "spec.targets"),
        ({"targets": ["host.example.123"]}, "spec.targets"),
        # the CRD's cron rule checks only the shape: these pass the apiserver
        ({"targets": ["a"], "schedule": "61 * * * *"}, "spec.schedule"),
        ({"targets": ["a"], "schedule": "0 0 31 2 *"}, "spec.schedule"),
    ],
)
def test_unusable_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        build(probe(spec), CONFIG)
    assert str(info.value).startswith(field)


def test_manifest_valid_against_upstream_schema() -> None:
    body = probe(
        {"targets": ["a"], "pushgateway": {"url": "https://p:1", "tlsCA": {"secretName": "c"}}}
    )
    kubernetes_validate.validate(build(body, CONFIG), "1.32", strict=True)


def test_default_image_pull_secrets_only_for_the_default_image() -> None:
    config = OperatorConfig.from_env({"TRACEROUTE_PROBE_IMAGE_PULL_SECRETS": "mirror, mirror2"})
    assert pod_spec(build(probe(), config))["imagePullSecrets"] == [
        {"name": "mirror"},
        {"name": "mirror2"},
    ]
    own_image = probe({"targets": ["a"], "image": "elsewhere.example/probe:1"})
    assert "imagePullSecrets" not in pod_spec(build(own_image, config))


def test_the_start_delay_can_be_capped_or_turned_off() -> None:
    off = OperatorConfig(probe_start_delay_max_seconds=0)
    capped = OperatorConfig(probe_start_delay_max_seconds=5)
    for i in range(40):
        body = probe(name=f"p{i}")
        assert "--start-delay-seconds" not in pod_spec(build(body, off))["containers"][0]["args"]
        args = pod_spec(build(body, capped))["containers"][0]["args"]
        assert all(0 < int(v) <= 5 for v in arg_value(args, "--start-delay-seconds"))
    assert (
        OperatorConfig.from_env(
            {"TRACEROUTE_PROBE_START_DELAY_MAX_SECONDS": "0"}
        ).probe_start_delay_max_seconds
        == 0
    )
