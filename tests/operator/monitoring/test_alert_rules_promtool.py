"""`promtool test rules` over the generated PrometheusRule: firing and quiet cases.

The rules come from build_prometheusrule(); the input series mimic what the probe
and the operator push (one run every 5 minutes, scraped every minute). Debian's
promtool evaluates them exactly as Prometheus would, annotation templates included.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from traceroute_operator.monitoring import MonitoringSettings, build_prometheusrule

from devcluster.promstack import promtool_path
from tests.operator.probes import parsed

NS = "team-a"
PROBE = "web"
WHO = f"TracerouteProbe {NS}/{PROBE}"
DESCRIBE = f"`kubectl -n {NS} describe tracerouteprobe {PROBE}`"
RUN_EVERY_MIN = 5  # schedule */5: interval 5m, confirm 7m30s, stale 15m, change window 15m

PROBE_SPEC = {
    "metadata": {"name": PROBE, "namespace": NS, "uid": "0d6f6c1e-1111-2222-3333-444455556666"},
    "spec": {"schedule": "*/5 * * * *", "targets": ["db.example", "10.9.8.7"]},
}


def sel(target: str | None, job: str = "traceroute", **extra: str) -> dict[str, str]:
    labels = {"job": job, "namespace": NS, "probe": PROBE}
    if target is not None:
        labels["target"] = target
    labels.update(extra)
    return labels


def series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def per_run(run_values: Sequence[float | None]) -> str:
    """Scrape values (one per minute) for a gauge replaced by a run every 5 minutes.

    None = the series is absent in that run (e.g. a hop that went silent).
    """
    out = []
    for value in run_values:
        text = "_" if value is None else f"{value:g}"
        out.extend([text] * RUN_EVERY_MIN)
    return " ".join(out)


def healthy_target(target: str, runs: int, hops: int = 6) -> list[dict[str, str]]:
    """The series of a target that is reached every run with a stable path."""
    return [
        series("traceroute_reached", sel(target), per_run([1] * runs)),
        series("traceroute_hops", sel(target), per_run([hops] * runs)),
        series("traceroute_destination_loss_ratio", sel(target), per_run([0] * runs)),
        series(
            "traceroute_path_changes_total",
            sel(target, job="traceroute-operator"),
            per_run([0] * runs),
        ),
    ]


def alert_labels(alert_severity: str, target: str | None, job: str = "traceroute", **extra: str):
    labels = sel(target, job=job)
    labels["severity"] = alert_severity
    labels.update(extra)
    return labels


def run_promtool(tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    rule = build_prometheusrule(*parsed(PROBE_SPEC), MonitoringSettings())
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    test_file = tmp_path / "test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [rules_file.name], "evaluation_interval": "30s", "tests": tests},
            sort_keys=False,
        )
    )
    check = subprocess.run(
        [promtool_path(), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.run(
        [promtool_path(), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )


def case(
    inputs: list[dict[str, str]],
    *rule_tests: list[dict[str, Any]],
    promql_expr_test: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One promtool test case: the inputs scraped every minute, then the expectations."""
    test: dict[str, Any] = {"interval": "1m", "input_series": inputs}
    if promql_expr_test is not None:
        test["promql_expr_test"] = promql_expr_test
    test["alert_rule_test"] = [check for checks in rule_tests for check in checks]
    return test


def assert_cases_pass(tmp_path: Path, *cases: dict[str, Any]) -> None:
    result = run_promtool(tmp_path, list(cases))
    assert result.returncode == 0, result.stdout + result.stderr


def assert_passes(
    tmp_path: Path,
    inputs: list[dict[str, str]],
    *rule_tests: list[dict[str, Any]],
    promql_expr_test: list[dict[str, Any]] | None = None,
) -> None:
    assert_cases_pass(tmp_path, case(inputs, *rule_tests, promql_expr_test=promql_expr_test))


def quiet(alertname: str, *times: str) -> list[dict[str, Any]]:
    return [{"eval_time": t, "alertname": alertname, "exp_alerts": []} for t in times]


def fires(alertname: str, alert: dict[str, Any], *times: str) -> list[dict[str, Any]]:
    return [{"eval_time": t, "alertname": alertname, "exp_alerts": [alert]} for t in times]


def test_path_changed_fires_after_the_operator_counts_a_change(tmp_path: Path) -> None:
    target = "db.example"
    # The operator confirmed a change at the run of minute 20 (counter 0 -> 1).
    inputs = [
        series("traceroute_reached", sel(target), per_run([1] * 10)),
        series("traceroute_hops", sel(target), per_run([6] * 4 + [7] * 6)),
        series(
            "traceroute_path_changes_total",
            sel(target, job="traceroute-operator"),
            per_run([0] * 4 + [1] * 6),
        ),
    ]
    firing = {
        "exp_labels": alert_labels("warning", target, job="traceroute-operator"),
        "exp_annotations": {
            "summary": f"Route from {WHO} to {target} changed",
            "description": (
                f"The network path from {WHO} to {target} changed within the last 15m: at "
                "some TTL the responding routers became disjoint from the previous path, or "
                "the hop count or reachability changed, confirmed over several runs. A silent "
                "hop or another ECMP branch of the same route does not count. Path changes so "
                f"far: 1; hop count now: 7. {DESCRIBE} shows the hop-by-hop diff in its Events."
            ),
        },
    }
    assert_passes(
        tmp_path,
        inputs,
        quiet("TraceroutePathChanged", "19m"),
        fires("TraceroutePathChanged", firing, "21m", "34m"),
        # 15 minutes after the change no sample of the old value is in the window
        quiet("TraceroutePathChanged", "36m", "45m"),
    )


def test_ecmp_flicker_and_silent_hop_do_not_fire_path_changed(tmp_path: Path) -> None:
    """Per-run path differences the operator does not count stay quiet.

    ECMP: TTL 3 alternates between two routers (and the probe's path fingerprint
    with it) on every run. Silent hop: TTL 4 stops answering from minute 25 on.
    Neither is a path change for the operator, so its counter stays at 0.
    """
    ecmp, silent = "db.example", "10.9.8.7"
    runs = 12
    inputs = [*healthy_target(ecmp, runs), *healthy_target(silent, runs)]
    inputs += [
        series("traceroute_path_fingerprint", sel(ecmp), per_run([1111, 2222] * (runs // 2))),
        series(
            "traceroute_hop_info",
            sel(ecmp, flows="0", ttl="3", ip="10.0.2.1"),
            per_run([1, None] * (runs // 2)),
        ),
        series(
            "traceroute_hop_info",
            sel(ecmp, flows="0", ttl="3", ip="10.0.3.1"),
            per_run([None, 1] * (runs // 2)),
        ),
        series(
            "traceroute_hop_info",
            sel(silent, flows="0", ttl="4", ip="10.0.4.1"),
            per_run([1] * 5 + [None] * (runs - 5)),
        ),
        series("traceroute_path_fingerprint", sel(silent), per_run([3333] * 5 + [4444] * 7)),
    ]
    # The input really does change run by run: a rule keyed on the fingerprint
    # or on hop identities would have fired.
    input_changes: list[dict[str, Any]] = [
        {
            "expr": "changes(traceroute_path_fingerprint[15m]) > 0",
            "eval_time": "30m",
            "exp_samples": [
                {"labels": _series_key(sel(ecmp)), "value": 3},
                {"labels": _series_key(sel(silent)), "value": 1},
            ],
        },
        {
            "expr": f'count(traceroute_hop_info{{target="{silent}", ttl="4"}})',
            "eval_time": "20m",
            "exp_samples": [{"labels": "{}", "value": 1}],
        },
        {
            "expr": f'count(traceroute_hop_info{{target="{silent}", ttl="4"}})',
            "eval_time": "40m",
            "exp_samples": [],
        },
    ]
    assert_passes(
        tmp_path,
        inputs,
        quiet("TraceroutePathChanged", "10m", "27m", "40m", "55m"),
        quiet("TracerouteHopCountChanged", "27m", "40m", "55m"),
        quiet("TracerouteDestinationUnreachable", "27m", "55m"),
        promql_expr_test=input_changes,
    )


def _series_key(labels: dict[str, str]) -> str:
    # promql_expr_test compares against the series notation; `changes` drops the name
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def test_destination_unreachable_needs_two_runs(tmp_path: Path) -> None:
    down, blip = "db.example", "10.9.8.7"
    inputs = [
        # down from the run at minute 15 on
        series("traceroute_reached", sel(down), per_run([1, 1, 1] + [0] * 7)),
        series("traceroute_hops", sel(down), per_run([6, 6, 6] + [3] * 7)),
        # one failed run at minute 15, fine again at 20
        series("traceroute_reached", sel(blip), per_run([1, 1, 1, 0] + [1] * 6)),
        series("traceroute_hops", sel(blip), per_run([4, 4, 4, 2] + [4] * 6)),
    ]
    firing = {
        "exp_labels": alert_labels("critical", down),
        "exp_annotations": {
            "summary": f"{down} unreachable from {WHO}",
            "description": (
                f"{WHO} did not reach {down} in its last 2 runs (for 7m30s). The last hop "
                "that answered is at TTL 3. The Traceroute probe dashboard shows where the "
                "path ends."
            ),
        },
    }
    assert_passes(
        tmp_path,
        inputs,
        quiet("TracerouteDestinationUnreachable", "14m", "19m", "22m"),
        fires("TracerouteDestinationUnreachable", firing, "23m", "45m"),
        # a shorter path while unreachable is no hop-count alert
        quiet("TracerouteHopCountChanged", "23m", "45m"),
        quiet("TracerouteDestinationLossHigh", "23m", "45m"),
    )


def test_hop_count_differs_from_expected(tmp_path: Path) -> None:
    longer, as_expected = "db.example", "10.9.8.7"
    inputs = [
        series("traceroute_reached", sel(longer), per_run([1] * 10)),
        series("traceroute_hops", sel(longer), per_run([5, 5, 5] + [6] * 7)),
        series("traceroute_expected_hops", sel(longer), per_run([5] * 10)),
        series("traceroute_reached", sel(as_expected), per_run([1] * 10)),
        series("traceroute_hops", sel(as_expected), per_run([4] * 10)),
        series("traceroute_expected_hops", sel(as_expected), per_run([4] * 10)),
    ]
    firing = {
        "exp_labels": alert_labels("warning", longer, reason="expected_mismatch"),
        "exp_annotations": {
            "summary": f"{longer} is 6 hops from {WHO}, expected 5",
            "description": (
                f"{WHO} reaches {longer} in 6 hops, but its spec.expectedHops says 5 (in its "
                f"last 2 runs). The route is not the one you declared; {DESCRIBE} shows the "
                "current path."
            ),
        },
    }
    assert_passes(
        tmp_path,
        inputs,
        quiet("TracerouteHopCountChanged", "14m", "20m"),
        fires("TracerouteHopCountChanged", firing, "23m"),
        # an expectation makes it persistent, not a 15-minute notice
        fires("TracerouteHopCountChanged", firing, "48m"),
    )


def test_hop_count_changed_without_expectation(tmp_path: Path) -> None:
    changed, flicker = "db.example", "10.9.8.7"
    inputs = [
        series("traceroute_reached", sel(changed), per_run([1] * 14)),
        # 6 hops up to the run at minute 25, 8 hops from the run at minute 30 on
        series("traceroute_hops", sel(changed), per_run([6] * 6 + [8] * 8)),
        series("traceroute_reached", sel(flicker), per_run([1] * 14)),
        # the run at minute 30 takes a longer path, the next one is back
        series("traceroute_hops", sel(flicker), per_run([6] * 6 + [7] + [6] * 7)),
    ]
    firing = {
        "exp_labels": alert_labels("warning", changed, reason="changed"),
        "exp_annotations": {
            "summary": f"Hop count from {WHO} to {changed} changed to 8",
            "description": (
                f"The hop count from {WHO} to {changed} changed within the last 22m30s and "
                "has been 8 in its last 2 runs, while the destination answered all along. Set "
                "spec.expectedHops to alert on any other hop count instead. "
                f"{DESCRIBE} shows the path-change Events."
            ),
        },
    }
    assert_passes(
        tmp_path,
        inputs,
        # one run with 8 hops is not yet a change
        quiet("TracerouteHopCountChanged", "29m", "34m"),
        fires("TracerouteHopCountChanged", firing, "38m", "52m"),
        # the old value has left the window: the change is old news
        quiet("TracerouteHopCountChanged", "53m", "65m"),
    )


def test_destination_loss_high_only_while_reached(tmp_path: Path) -> None:
    lossy, fine = "db.example", "10.9.8.7"
    inputs = [
        series("traceroute_reached", sel(lossy), per_run([1] * 10)),
        series("traceroute_destination_loss_ratio", sel(lossy), per_run([0, 0, 0] + [0.5] * 7)),
        series("traceroute_reached", sel(fine), per_run([1] * 10)),
        series("traceroute_destination_loss_ratio", sel(fine), per_run([0.1] * 10)),
    ]
    firing = {
        "exp_labels": alert_labels("warning", lossy),
        "exp_annotations": {
            "summary": f"50% loss to {lossy} from {WHO}",
            "description": (
                f"{WHO} lost 50% of its probes to the destination {lossy} (threshold 20%) in "
                "its last 2 runs, though the destination still answers. The per-hop table of "
                "the Traceroute probe dashboard shows from which hop on the loss starts."
            ),
        },
    }
    assert_passes(
        tmp_path,
        inputs,
        quiet("TracerouteDestinationLossHigh", "14m", "20m"),
        fires("TracerouteDestinationLossHigh", firing, "23m"),
    )


def test_probe_stale_when_runs_stop_or_never_arrive(tmp_path: Path) -> None:
    # runs at 0, 5, ..., 30 minutes, then nothing new (the value stays in the
    # Pushgateway, so the series is still scraped)
    run_times = [60 * RUN_EVERY_MIN * min(i, 6) for i in range(14)]
    stopped = [series("traceroute_run_timestamp_seconds", sel(None), per_run(run_times))]
    stale_firing = {
        "exp_labels": {
            "namespace": NS,
            "probe": PROBE,
            "severity": "warning",
            "reason": "no_recent_run",
        },
        "exp_annotations": {
            "summary": f"{WHO} has not run for 16m 0s",
            "description": (
                f"No result of {WHO} (targets: db.example, 10.9.8.7) for 16m 0s; its schedule "
                "'*/5 * * * *' runs at least every 5m (alert after 15m). Check its CronJob, "
                f"Jobs and pods in namespace {NS}: {DESCRIBE}."
            ),
        },
    }
    absent_firing = {
        "exp_labels": {
            "namespace": NS,
            "probe": PROBE,
            "severity": "warning",
            "reason": "no_results",
        },
        "exp_annotations": {
            "summary": f"{WHO} has no results in Prometheus",
            "description": (
                f"No result of {WHO} (targets: db.example, 10.9.8.7) has reached Prometheus "
                "for 15m; its schedule '*/5 * * * *' runs at least every 5m. Check its "
                f"CronJob, Jobs and pods ({DESCRIBE}) and that Prometheus scrapes the "
                "Pushgateway (ServiceMonitor selected by your Prometheus)."
            ),
        },
    }
    # another probe's runs arrive; this probe's never do
    other_probe = series(
        "traceroute_run_timestamp_seconds",
        {"job": "traceroute", "namespace": NS, "probe": "other"},
        "0+60x30",
    )
    assert_cases_pass(
        tmp_path,
        case(
            stopped,
            quiet("TracerouteProbeStale", "29m", "44m"),
            fires("TracerouteProbeStale", stale_firing, "46m"),
        ),
        case(
            [other_probe],
            quiet("TracerouteProbeStale", "14m"),
            fires("TracerouteProbeStale", absent_firing, "16m"),
        ),
    )


def test_promtool_reports_a_wrong_expectation(tmp_path: Path) -> None:
    """The harness itself can fail: claiming an alert that does not fire is caught."""
    wrong = fires(
        "TracerouteDestinationUnreachable",
        {"exp_labels": alert_labels("critical", "db.example")},
        "20m",
    )
    result = run_promtool(tmp_path, [case(healthy_target("db.example", 6), wrong)])
    assert result.returncode != 0
    assert "TracerouteDestinationUnreachable" in result.stdout + result.stderr
