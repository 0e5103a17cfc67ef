"""Scale behaviour against a real control plane with an audit log.

- Two real Pushgateway shards: the operator points each probe's CronJob at its shard (a
  stable hash of namespace/name) and deletes a probe's groups on that shard only.
- The default ``H/5`` schedule, resolved by the operator, spreads 200 probes' CronJobs over
  the five minutes; the real CronJob controller starts ``H/2`` probes at their own minutes.
- The operator's pod watch is filtered by the apiserver (``labelSelector`` in every LIST and
  WATCH of pods it makes, read from the apiserver's audit log), so churning unrelated pods
  does not grow its memory.

Its own control plane (the session one has no audit log); pods stay Pending (no kubelet).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import datetime as dt
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from traceroute_operator.pushgateway_policy import shard_for
from traceroute_operator.stagger import identity

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeError, KubeRest, ensure_namespace, wait_default_service_account
from devcluster.monitoring_crds import install_crds as install_monitoring_crds
from devcluster.operator_process import (
    OperatorProcess,
    install_crd,
    probe_manifest,
    probe_path,
)
from devcluster.promstack import Pushgateway
from devcluster.runtime import wait_until
from tests.fixtures.lab import require_root

pytestmark = pytest.mark.slow

NAMESPACE = "scale"
OPERATOR_NAMESPACE = "scale-operator"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "Metadata", "verbs": ["list", "watch"], "resources": [{"resources": ["pods"]}]},
        {"level": "None"},
    ],
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Path]]:
    require_root()
    directory = tmp_path_factory.mktemp("audit")
    policy, log = directory / "policy.json", directory / "audit.log"
    policy.write_text(json.dumps(AUDIT_POLICY))
    cp = ControlPlane(
        extra_apiserver_args=(f"--audit-policy-file={policy}", f"--audit-log-path={log}")
    ).start()
    try:
        yield cp, log
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def cluster(
    audited: tuple[ControlPlane, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KubeRest, OperatorProcess, Path]]:
    cp, log = audited
    with KubeRest(cp.kubeconfig) as kube:
        install_crd(cp.kubeconfig)
        install_monitoring_crds(cp.kubeconfig)
        ensure_namespace(kube, NAMESPACE)
        wait_default_service_account(kube, NAMESPACE)
        operator = OperatorProcess(
            cp,
            kube,
            namespaces=[NAMESPACE],
            operator_namespace=OPERATOR_NAMESPACE,
            # no probe pod ever runs here: nothing is pushed
            pushgateway_url="http://127.0.0.1:9",
            log_dir=tmp_path_factory.mktemp("operator"),
        ).start()
        try:
            yield kube, operator, log
        finally:
            operator.stop()
            for item in kube.get(probe_path(NAMESPACE)).get("items", []):
                with contextlib.suppress(KubeError):
                    kube.merge_patch(
                        probe_path(NAMESPACE, item["metadata"]["name"]),
                        {"metadata": {"finalizers": None}},
                    )


def _create_probes(kube: KubeRest, names: list[str], spec: dict[str, Any]) -> None:
    def create(name: str) -> None:
        kube.post(probe_path(NAMESPACE), probe_manifest(name, spec))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))


def _cronjobs(kube: KubeRest, names: list[str]) -> dict[str, dict[str, Any]]:
    items = kube.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs").get("items", [])
    by_name = {c["metadata"]["name"]: c for c in items}
    return {n: by_name[f"trp-{n}"] for n in names if f"trp-{n}" in by_name}


def _minute_offset(schedule: str, step: int) -> int:
    minute, rest = schedule.split(" ", 1)
    start, _, tail = minute.partition("-")
    assert tail == f"59/{step}" and rest == "* * * *", schedule
    return int(start)


def test_default_schedule_spreads_cronjobs_over_the_five_minutes(
    cluster: tuple[KubeRest, OperatorProcess, Path],
) -> None:
    kube, _, _ = cluster
    names = [f"spread-{i:03d}" for i in range(200)]
    # suspended: the CronJobs carry their schedules, but 200 Jobs would only load the CPU
    _create_probes(kube, names, {"targets": ["192.0.2.1"], "suspend": True})
    probe = kube.get(probe_path(NAMESPACE, names[0]))
    assert probe["spec"]["schedule"] == "H/5 * * * *"  # the CRD's default
    cronjobs = wait_until(
        lambda: (found := _cronjobs(kube, names)) and len(found) == len(names) and found,
        timeout=180,
        interval=2,
        what="200 CronJobs",
    )
    offsets = collections.Counter(
        _minute_offset(c["spec"]["schedule"], 5) for c in cronjobs.values()
    )
    assert set(offsets) == {0, 1, 2, 3, 4}
    # 40 expected per minute; a shared minute would put all 200 in one
    assert max(offsets.values()) <= 60, offsets
    assert min(offsets.values()) >= 20, offsets


def test_the_cronjob_controller_starts_each_probe_at_its_own_minute(
    cluster: tuple[KubeRest, OperatorProcess, Path],
) -> None:
    kube, _, _ = cluster
    names = [f"minute-{i:02d}" for i in range(8)]
    _create_probes(kube, names, {"targets": ["192.0.2.1"], "schedule": "H/2 * * * *"})
    cronjobs = wait_until(
        lambda: (found := _cronjobs(kube, names)) and len(found) == len(names) and found,
        timeout=120,
        interval=1,
        what="the CronJobs",
    )
    offsets = {n: _minute_offset(c["spec"]["schedule"], 2) for n, c in cronjobs.items()}
    assert set(offsets.values()) == {0, 1}  # these names use both minutes

    def scheduled() -> dict[str, str] | None:
        times = {
            n: c.get("status", {}).get("lastScheduleTime")
            for n, c in _cronjobs(kube, names).items()
        }
        return times if all(times.values()) else None

    # every CronJob runs within 2 minutes of being created (+ controller latency)
    times = wait_until(scheduled, timeout=200, interval=2, what="lastScheduleTime of all")
    for name, stamp in times.items():
        minute = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).minute
        assert minute % 2 == offsets[name], (name, stamp, cronjobs[name]["spec"]["schedule"])
    jobs = kube.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs").get("items", [])
    owners = {ref["name"] for j in jobs for ref in j["metadata"].get("ownerReferences", [])}
    assert {f"trp-{n}" for n in names} <= owners


def _operator_pod_requests(log: Path, operator_namespace: str) -> list[str]:
    user = f"system:serviceaccount:{operator_namespace}:"
    uris = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username", "").startswith(user):
            uris.append(event["requestURI"])
    return uris


def test_pod_watch_is_filtered_by_the_apiserver_and_churn_leaves_rss_flat(
    cluster: tuple[KubeRest, OperatorProcess, Path],
) -> None:
    kube, operator, log = cluster
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {"containers": [{"name": "c", "image": "registry.test/unrelated:1"}]},
    }

    def churn(round_: int) -> None:
        def create(i: int) -> None:
            kube.post(
                f"/api/v1/namespaces/{NAMESPACE}/pods",
                {**pod, "metadata": {"name": f"unrelated-{round_}-{i}", "labels": {"app": "x"}}},
            )

        def delete(i: int) -> None:
            kube.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/unrelated-{round_}-{i}")

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(300)))
            list(pool.map(delete, range(300)))

    churn(0)  # warm-up: whatever a first burst allocates once
    rss_before = _rss_kib(operator)
    for round_ in range(1, 4):
        churn(round_)
    rss_after = _rss_kib(operator)

    uris = _operator_pod_requests(log, OPERATOR_NAMESPACE)
    assert uris, "the operator made no LIST/WATCH of pods (audit log)"
    for uri in uris:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
        assert query.get("labelSelector") == [
            "traceroute.dev/probe,app.kubernetes.io/managed-by=traceroute-operator"
        ], uri
    # 900 unrelated pods created and deleted: the operator never receives them
    assert rss_after - rss_before < 10 * 1024, (rss_before, rss_after)


def _rss_kib(operator: OperatorProcess) -> int:
    assert operator.proc is not None
    for line in Path(f"/proc/{operator.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


SHARD_NAMESPACE = "sharded"


def _pushgateway_arg(cronjob: dict[str, Any]) -> str:
    args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    return str(args[args.index("--pushgateway") + 1])


def _groups(pgw: Pushgateway) -> set[tuple[str, str, str]]:
    return {
        (g["labels"].get("job", ""), g["labels"].get("namespace", ""), g["labels"].get("probe", ""))
        for g in pgw.groups()
    }


def _names_on_both_shards(shards: tuple[str, ...], count: int) -> list[str]:
    """``count`` probe names, half on each shard. The gateways' ports are random,
    so a fixed list of names can land on one shard (one full run put all 12 on one)."""
    candidates = [f"s{i:02d}" for i in range(64)]
    by_shard = {
        url: [n for n in candidates if shard_for(shards, identity(SHARD_NAMESPACE, n)) == url]
        for url in shards
    }
    per_shard = count // len(shards)
    assert all(len(v) >= per_shard for v in by_shard.values()), by_shard
    return sorted(n for names in by_shard.values() for n in names[:per_shard])


def test_probes_split_over_two_real_shards_and_cleanup_hits_the_right_one(
    audited: tuple[ControlPlane, Path], tmp_path: Path
) -> None:
    cp, _ = audited
    with (
        Pushgateway(listen_host="127.0.0.1") as first,
        Pushgateway(listen_host="127.0.0.1") as second,
        KubeRest(cp.kubeconfig) as kube,
    ):
        install_crd(cp.kubeconfig)
        install_monitoring_crds(cp.kubeconfig)
        ensure_namespace(kube, SHARD_NAMESPACE)
        shards = {first.url: first, second.url: second}
        operator = OperatorProcess(
            cp,
            kube,
            namespaces=[SHARD_NAMESPACE],
            operator_namespace="sharded-operator",
            pushgateway_url=first.url,
            log_dir=tmp_path,
            env={"TRACEROUTE_PUSHGATEWAY_SHARDS": f"{first.url},{second.url}"},
        ).start()
        try:
            names = _names_on_both_shards(tuple(shards), count=12)
            for name in names:
                kube.post(
                    probe_path(SHARD_NAMESPACE),
                    probe_manifest(name, {"targets": ["192.0.2.1"], "suspend": True}),
                )

            def cronjobs() -> dict[str, str] | None:
                items = kube.get(f"/apis/batch/v1/namespaces/{SHARD_NAMESPACE}/cronjobs")
                found = {c["metadata"]["name"]: _pushgateway_arg(c) for c in items["items"]}
                return found if len(found) == len(names) else None

            assigned = wait_until(cronjobs, timeout=120, interval=1, what="the CronJobs")
            expected = {
                f"trp-{n}": shard_for(tuple(shards), identity(SHARD_NAMESPACE, n)) for n in names
            }
            assert assigned == expected
            assert set(assigned.values()) == set(shards)  # both shards hold probes

            # every probe's and the operator's group, on both gateways (as if an earlier
            # shard assignment had left copies): cleanup must delete on the probe's shard
            for name in names:
                for pgw in shards.values():
                    for job in ("traceroute", "traceroute-operator"):
                        pgw.push(
                            job,
                            {"namespace": SHARD_NAMESPACE, "probe": name},
                            "traceroute_test 1\n",
                        )
            for name in names:
                kube.delete(probe_path(SHARD_NAMESPACE, name))
            wait_until(
                lambda: not kube.get(probe_path(SHARD_NAMESPACE)).get("items"),
                timeout=120,
                interval=1,
                what="the probes' finalizers",
            )
            for url, pgw in shards.items():
                left = _groups(pgw)
                for name in names:
                    on_this = expected[f"trp-{name}"] == url
                    for job in ("traceroute", "traceroute-operator"):
                        present = (job, SHARD_NAMESPACE, name) in left
                        assert present is not on_this, (url, name, job, sorted(left))
        finally:
            operator.stop()
            for item in kube.get(probe_path(SHARD_NAMESPACE)).get("items", []):
                with contextlib.suppress(KubeError):
                    kube.merge_patch(
                        probe_path(SHARD_NAMESPACE, item["metadata"]["name"]),
                        {"metadata": {"finalizers": None}},
                    )
