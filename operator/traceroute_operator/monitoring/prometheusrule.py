"""PrometheusRule with the alerts of one TracerouteProbe.

One object per probe, in the probe's namespace, owned by the probe: its stale
threshold comes from the probe's schedule, and its expressions select the probe's
own series (``namespace``/``probe`` come from the Pushgateway grouping key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..naming import LABEL_PROBE, bounded_name
from ..ref import ProbeRef
from ..schedule import max_interval_seconds
from ..stagger import identity, resolve_schedule
from ._common import common_labels, duration, promql_string
from .settings import MonitoringSettings

if TYPE_CHECKING:
    # annotation only: spec -> config -> monitoring.settings would import this module back
    from ..spec import ProbeSpec

RULE_NAME_PREFIX = "traceroute-probe-"
_ON = "on (namespace, probe, target)"
# One-to-one matching with on() keeps only the on() labels; group_left keeps all of
# the left side's (job and the probe's --label labels, which alert routing may use).
_ON_KEEP = "on (namespace, probe, target) group_left ()"


def _selector(ref: ProbeRef) -> str:
    """PromQL matchers of the probe's own series (its Pushgateway grouping key)."""
    return f"namespace={promql_string(ref.namespace)}, probe={promql_string(ref.name)}"


def prometheusrule_name(probe_name: str) -> str:
    return bounded_name(RULE_NAME_PREFIX, probe_name, 253)


@dataclass(frozen=True)
class AlertTimings:
    """Durations derived from the probe's schedule and the settings, in seconds."""

    interval: float  # longest gap between two runs of the schedule
    confirm: float  # a condition must hold this long to span alert_confirm_runs runs
    stale: float  # no run for this long is stale
    change_window: float  # PathChanged / HopCountChanged keep firing this long


def alert_timings(schedule: str, settings: MonitoringSettings) -> AlertTimings:
    interval = max_interval_seconds(schedule)
    # A value pushed by run k is replaced by run k+1 one interval later (plus the
    # run's own duration and a scrape): holding for (n-1) intervals and half an
    # interval more (at most 5 min, at least 1 min) means n runs agreed.
    margin = min(max(interval / 2, 60.0), 300.0)
    confirm = (settings.alert_confirm_runs - 1) * interval + margin
    stale = max(settings.stale_multiplier * interval, interval + settings.stale_min_grace_seconds)
    return AlertTimings(
        interval=interval,
        confirm=confirm,
        stale=stale,
        change_window=float(settings.change_alert_window_seconds),
    )


def build_prometheusrule(
    ref: ProbeRef, spec: ProbeSpec, settings: MonitoringSettings
) -> dict[str, Any]:
    """The PrometheusRule (monitoring.coreos.com/v1) holding the alerts of one probe."""
    # the CronJob's own schedule: an H form's gaps depend on the values it resolves to
    timings = alert_timings(_resolved(ref, spec), settings)
    metadata: dict[str, Any] = {
        "name": prometheusrule_name(ref.name),
        "namespace": ref.namespace,
        "labels": {
            **common_labels("alerts"),
            LABEL_PROBE: _label_value(ref.name),
            **settings.prometheusrule_labels,
        },
    }
    owner = ref.owner_reference()
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {
            "groups": [
                {
                    "name": f"traceroute.{ref.namespace}.{ref.name}",
                    "rules": build_alert_rules(ref, spec, timings, settings),
                }
            ]
        },
    }


def build_alert_rules(
    ref: ProbeRef, spec: ProbeSpec, timings: AlertTimings, settings: MonitoringSettings
) -> list[dict[str, Any]]:
    sel = _selector(ref)
    who = f"TracerouteProbe {ref.namespace}/{ref.name}"
    runs = settings.alert_confirm_runs
    runs_text = "its last run" if runs == 1 else f"its last {runs} runs"
    confirm = duration(timings.confirm)
    window = duration(timings.change_window)
    changed_window = duration(timings.confirm + timings.change_window)
    describe = f"`kubectl -n {ref.namespace} describe tracerouteprobe {ref.name}`"

    def now(metric: str, fmt: str = "%.0f") -> str:
        return _current_value(f"{metric}{{{sel}, target=%q}}", fmt)

    rules: list[dict[str, Any]] = []

    def add(alert: str, expr: str, hold: str | None, summary: str, description: str) -> None:
        rule: dict[str, Any] = {"alert": alert, "expr": expr}
        if hold:
            rule["for"] = hold
        rule["labels"] = {"severity": settings.severity(alert), **settings.alert_labels}
        rule["annotations"] = {"summary": summary, "description": description}
        rules.append(rule)

    add(
        "TraceroutePathChanged",
        f"increase(traceroute_path_changes_total{{{sel}}}[{window}]) > 0",
        None,
        f"Route from {who} to {{{{ $labels.target }}}} changed",
        f"The network path from {who} to {{{{ $labels.target }}}} changed within the last "
        f"{window}: at some TTL the responding routers became disjoint from the previous "
        "path, or the hop count or reachability changed, confirmed over several runs. "
        "A silent hop or another ECMP branch of the same route does not count. "
        f"Path changes so far: {now('traceroute_path_changes_total')}; "
        f"hop count now: {now('traceroute_hops')}. "
        f"{describe} shows the hop-by-hop diff in its Events.",
    )
    add(
        "TracerouteDestinationUnreachable",
        f"traceroute_reached{{{sel}}} == 0",
        confirm,
        f"{{{{ $labels.target }}}} unreachable from {who}",
        f"{who} did not reach {{{{ $labels.target }}}} in {runs_text} (for {confirm}). "
        f"The last hop that answered is at TTL {now('traceroute_hops')}. "
        "The Traceroute probe dashboard shows where the path ends.",
    )
    add(
        "TracerouteHopCountChanged",
        f"(traceroute_hops{{{sel}}} != {_ON_KEEP} traceroute_expected_hops{{{sel}}})"
        f" and {_ON} (traceroute_reached{{{sel}}} == 1)",
        confirm,
        f"{{{{ $labels.target }}}} is {{{{ $value }}}} hops from {who}, expected "
        f"{now('traceroute_expected_hops')}",
        f"{who} reaches {{{{ $labels.target }}}} in {{{{ $value }}}} hops, but its "
        f"spec.expectedHops says {now('traceroute_expected_hops')} (in {runs_text}). "
        f"The route is not the one you declared; {describe} shows the current path.",
        # Only targets with an expectation: see the rule without one below.
    )
    rules[-1]["labels"]["reason"] = "expected_mismatch"
    add(
        "TracerouteHopCountChanged",
        # moved from one value held over the confirm runs (one window ago) to another
        # value held over the confirm runs (now), so a single odd run never fires;
        # and the destination answered all along (a failing run changes the hop
        # count too: that is TracerouteDestinationUnreachable's business)
        f"(traceroute_hops{{{sel}}}"
        f" != {_ON_KEEP} (traceroute_hops{{{sel}}} offset {changed_window})"
        f" and {_ON} (max_over_time(traceroute_hops{{{sel}}}[{confirm}])"
        f" == min_over_time(traceroute_hops{{{sel}}}[{confirm}]))"
        f" and {_ON} (max_over_time(traceroute_hops{{{sel}}}[{confirm}] offset {changed_window})"
        f" == min_over_time(traceroute_hops{{{sel}}}[{confirm}] offset {changed_window}))"
        f" and {_ON} (min_over_time(traceroute_reached{{{sel}}}[{changed_window}]) == 1))"
        f" unless {_ON} traceroute_expected_hops{{{sel}}}",
        None,
        f"Hop count from {who} to {{{{ $labels.target }}}} changed to {{{{ $value }}}}",
        f"The hop count from {who} to {{{{ $labels.target }}}} changed within the last "
        f"{changed_window} and has been {{{{ $value }}}} in {runs_text}, while the "
        "destination answered all along. Set spec.expectedHops to alert on any other hop "
        f"count instead. {describe} shows the path-change Events.",
    )
    rules[-1]["labels"]["reason"] = "changed"
    add(
        "TracerouteDestinationLossHigh",
        f"traceroute_destination_loss_ratio{{{sel}}} > {settings.destination_loss_threshold:g}"
        f" and {_ON} (traceroute_reached{{{sel}}} == 1)",
        confirm,
        f"{{{{ $value | humanizePercentage }}}} loss to {{{{ $labels.target }}}} from {who}",
        f"{who} lost {{{{ $value | humanizePercentage }}}} of its probes to the destination "
        f"{{{{ $labels.target }}}} (threshold {settings.destination_loss_threshold:.0%}) in "
        f"{runs_text}, though the destination still answers. The per-hop table of the "
        "Traceroute probe dashboard shows from which hop on the loss starts.",
    )
    if not spec.suspend:
        stale = duration(timings.stale)
        targets = _targets_text(spec.targets)
        resolved = _resolved(ref, spec)
        shown = repr(spec.schedule) + (f" ({resolved})" if resolved != spec.schedule else "")
        schedule = f"its schedule {shown} runs at least every {duration(timings.interval)}"
        add(
            "TracerouteProbeStale",
            f"time() - max by (namespace, probe) (traceroute_run_timestamp_seconds{{{sel}}})"
            f" > {timings.stale:.0f}",
            None,
            f"{who} has not run for {{{{ $value | humanizeDuration }}}}",
            f"No result of {who}{targets} for {{{{ $value | humanizeDuration }}}}; "
            f"{schedule} (alert after {stale}). "
            f"Check its CronJob, Jobs and pods in namespace {ref.namespace}: {describe}.",
        )
        rules[-1]["labels"]["reason"] = "no_recent_run"
        add(
            "TracerouteProbeStale",
            f"absent(traceroute_run_timestamp_seconds{{{sel}}})",
            stale,
            f"{who} has no results in Prometheus",
            f"No result of {who}{targets} has reached Prometheus for {stale}; {schedule}. "
            f"Check its CronJob, Jobs and pods ({describe}) and that Prometheus scrapes "
            "the Pushgateway (ServiceMonitor selected by your Prometheus).",
        )
        rules[-1]["labels"]["reason"] = "no_results"
    return rules


def _resolved(ref: ProbeRef, spec: ProbeSpec) -> str:
    return resolve_schedule(spec.schedule, identity(ref.namespace, ref.name))


def _current_value(selector_format: str, fmt: str) -> str:
    """A Go-template snippet printing the current value of one series of this target."""
    return (
        f"{{{{ with printf `{selector_format}` $labels.target | query }}}}"
        f'{{{{ . | first | value | printf "{fmt}" }}}}{{{{ else }}}}unknown{{{{ end }}}}'
    )


def _targets_text(targets: tuple[str, ...]) -> str:
    if not targets:
        return ""
    shown = ", ".join(targets[:5])
    if len(targets) > 5:
        shown += f" and {len(targets) - 5} more"
    return f" (targets: {shown})"


def _label_value(value: str) -> str:
    # Kubernetes label values are at most 63 characters.
    return value if len(value) <= 63 else bounded_name("", value, 63)
