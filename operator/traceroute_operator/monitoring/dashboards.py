"""Grafana dashboards (overview + per-probe drill-down) as ConfigMaps for the sidecar.

Built with grafana-foundation-sdk's typed builders. Two things the SDK's models do
not carry are added to the JSON afterwards (see ``_finish``): the Prometheus
annotation fields (``titleFormat``, ``useValueForTime``, ...) and nothing else.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import nodegraph, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from ._common import common_labels
from .settings import MonitoringSettings

OVERVIEW_UID = "traceroute-overview"
PROBE_UID = "traceroute-probe"
OVERVIEW_CONFIGMAP = "traceroute-dashboard-overview"
PROBE_CONFIGMAP = "traceroute-dashboard-probe"
TAGS = ["traceroute", "network"]

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label-set normalisation: the probe's and the operator's groups differ in `job`
# (and may carry extra --label labels), so joins and merges use these keys only.
_KEYS = "namespace, probe, target"
_HOP_KEYS = "namespace, probe, target, ttl"


class _Ids:
    """Unique panel ids within one dashboard."""

    def __init__(self) -> None:
        self.next_id = 0

    def __call__(self) -> int:
        self.next_id += 1
        return self.next_id


def _query(
    expr: str,
    *,
    ref: str = "A",
    legend: str | None = None,
    instant: bool = False,
    table_format: bool = False,
) -> prom.Dataquery:
    query = prom.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend is not None:
        query = query.legend_format(legend)
    query = query.instant() if instant else query.range()
    if table_format:
        query = query.format(PromQueryFormat.TABLE)
    return query


def _mapping(values: dict[str, tuple[str, str]]) -> model.ValueMap:
    return model.ValueMap(
        options={
            key: model.ValueMappingResult(text=text, color=color, index=index)
            for index, (key, (text, color)) in enumerate(values.items())
        }
    )


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


_REACHED_MAPPING = _mapping({"1": ("reached", "green"), "0": ("unreachable", "red")})


def _variables(*, multi: bool) -> list[Any]:
    """datasource, namespace, probe, target; multi-select with All on the overview."""
    variables: list[Any] = [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
    ]
    chain = [
        ("namespace", "Namespace", "label_values(traceroute_run_timestamp_seconds, namespace)"),
        (
            "probe",
            "Probe",
            'label_values(traceroute_run_timestamp_seconds{namespace=~"$namespace"}, probe)',
        ),
        (
            "target",
            "Target",
            'label_values(traceroute_reached{namespace=~"$namespace", probe=~"$probe"}, target)',
        ),
    ]
    for name, label, query in chain:
        variable = (
            dash.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
            .multi(multi)
            .include_all(multi)
        )
        if multi:
            variable = variable.all_value(".*")
        variables.append(variable)
    return variables


def _path_change_annotation(selector: str) -> dash.AnnotationQuery:
    return (
        dash.AnnotationQuery()
        .name("Path changes")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("orange")
        .expr(f"traceroute_path_last_change_timestamp_seconds{{{selector}}} * 1000")
    )


# Fields of the Prometheus annotation the SDK's AnnotationQuery model has no slot for.
_ANNOTATION_EXTRAS = {
    "Path changes": {
        "step": "1m",
        # the series value is the change time (ms): the annotation lands at the
        # moment the operator saw the change, not at every scrape
        "useValueForTime": True,
        "titleFormat": "Path changed: {{target}}",
        "textFormat": "{{namespace}}/{{probe}} -> {{target}}",
        "tagKeys": "namespace,probe,target",
    }
}


def _row(ids: _Ids, title: str) -> dash.Row:
    return dash.Row(title).id(ids())


def _stat(ids: _Ids, title: str, expr: str, description: str, *, span: int) -> stat.Panel:
    """A single-value panel of the latest sample, coloured by its thresholds or mappings."""
    return (
        stat.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(_query(expr, instant=True))
        .height(4)
        .span(span)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )


def _timeseries(
    ids: _Ids,
    title: str,
    targets: Sequence[prom.Dataquery],
    *,
    description: str | None = None,
    unit: str | None = None,
    height: int = 8,
) -> timeseries.Panel:
    """A half-width graph."""
    panel = timeseries.Panel().id(ids()).title(title)
    if description is not None:
        panel = panel.description(description)
    panel = panel.datasource(DATASOURCE).targets(list(targets))
    if unit is not None:
        panel = panel.unit(unit)
    return panel.height(height).span(12)


def _dashboard(title: str, *, uid: str, description: str, multi: bool, sel: str) -> dash.Dashboard:
    """Header shared by both dashboards: variables, path-change annotation, time, refresh."""
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .variables(_variables(multi=multi))
        .annotation(_path_change_annotation(sel))
    )


def build_overview_dashboard() -> dict[str, Any]:
    """Every probe and target: reached, hops, path changes, last run."""
    ids = _Ids()
    sel = 'namespace=~"$namespace", probe=~"$probe", target=~"$target"'
    probe_sel = 'namespace=~"$namespace", probe=~"$probe"'

    def stat_panel(title: str, expr: str, description: str) -> stat.Panel:
        return _stat(ids, title, expr, description, span=6)

    drill_link = (
        f"/d/{PROBE_UID}/traceroute-probe?${{datasource:queryparam}}"
        "&var-namespace=${__data.fields.namespace}&var-probe=${__data.fields.probe}"
        "&var-target=${__data.fields.target}&${__url_time_range}"
    )
    table_queries = [
        ("A", f"max by ({_KEYS}) (traceroute_reached{{{sel}}})", "Reached"),
        ("B", f"max by ({_KEYS}) (traceroute_hops{{{sel}}})", "Hops"),
        ("C", f"max by ({_KEYS}) (traceroute_expected_hops{{{sel}}})", "Expected hops"),
        ("D", f"max by ({_KEYS}) (traceroute_path_changes_total{{{sel}}})", "Path changes"),
        ("E", f"max by ({_KEYS}) (traceroute_destination_loss_ratio{{{sel}}})", "Loss"),
        ("F", f"max by ({_KEYS}) (traceroute_destination_rtt_seconds{{{sel}}})", "RTT"),
        (
            "G",
            f"max by ({_KEYS}) (traceroute_reached{{{sel}}} * 0 + on (namespace, probe)"
            f" group_left () (time() - max by (namespace, probe)"
            f" (traceroute_run_timestamp_seconds{{{probe_sel}}})))",
            "Last run",
        ),
    ]
    probes_table = (
        table.Panel()
        .id(ids())
        .title("Probes and targets")
        .description(
            "One row per probe and target, from the latest run. Click a probe for its "
            "drill-down dashboard."
        )
        .datasource(DATASOURCE)
        .targets([_query(e, ref=r, instant=True, table_format=True) for r, e, _ in table_queries])
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": {"namespace": 0, "probe": 1, "target": 2},
                    "renameByName": {f"Value #{r}": title for r, _, title in table_queries},
                },
            )
        )
        .height(10)
        .span(24)
        .override_by_name(
            "Reached",
            [
                model.DynamicConfigValue(id_val="mappings", value=[_REACHED_MAPPING]),
                model.DynamicConfigValue(
                    id_val="custom.cellOptions", value={"type": "color-background"}
                ),
            ],
        )
        .override_by_name("Loss", [model.DynamicConfigValue(id_val="unit", value="percentunit")])
        .override_by_name("RTT", [model.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("Last run", [model.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name(
            "probe",
            [
                model.DynamicConfigValue(
                    id_val="links",
                    value=[{"title": "Open the probe dashboard", "url": drill_link}],
                )
            ],
        )
    )

    reach_timeline = (
        statetimeline.Panel()
        .id(ids())
        .title("Reachability")
        .description("Whether each run reached its target.")
        .datasource(DATASOURCE)
        .with_target(
            _query(
                f"max by ({_KEYS}) (traceroute_reached{{{sel}}})",
                legend="{{namespace}}/{{probe}} {{target}}",
            )
        )
        .mappings([_REACHED_MAPPING])
        .height(8)
        .span(24)
    )

    def series(title: str, expr: str, unit: str, description: str) -> timeseries.Panel:
        return _timeseries(
            ids,
            title,
            [_query(expr, legend="{{namespace}}/{{probe}} {{target}}")],
            description=description,
            unit=unit,
        ).line_interpolation(common.LineInterpolation.STEP_AFTER)

    builder = (
        _dashboard(
            "Traceroute overview",
            uid=OVERVIEW_UID,
            description="Every TracerouteProbe: reachability, hop counts, path changes, staleness.",
            multi=True,
            sel=sel,
        )
        .with_row(_row(ids, "Summary"))
        .with_panel(
            stat_panel(
                "Probes",
                f"count(count by (namespace, probe) "
                f"(traceroute_run_timestamp_seconds{{{probe_sel}}})) or vector(0)",
                "TracerouteProbes that pushed at least one run.",
            ).thresholds(_thresholds((None, "blue")))
        )
        .with_panel(
            stat_panel(
                "Unreachable targets",
                f"count(traceroute_reached{{{sel}}} == 0) or vector(0)",
                "Targets whose latest run did not reach the destination.",
            ).thresholds(_thresholds((None, "green"), (1, "red")))
        )
        .with_panel(
            stat_panel(
                "Hops != expected",
                f"count(traceroute_hops{{{sel}}} != on ({_KEYS})"
                f" traceroute_expected_hops{{{sel}}}) or vector(0)",
                "Targets with spec.expectedHops whose latest hop count differs from it.",
            ).thresholds(_thresholds((None, "green"), (1, "red")))
        )
        .with_panel(
            stat_panel(
                "Path changes in range",
                f"round(sum(increase(traceroute_path_changes_total{{{sel}}}[$__range])))"
                " or vector(0)",
                "Path changes the operator confirmed (ECMP-aware) in the selected time range.",
            ).thresholds(_thresholds((None, "green"), (1, "orange")))
        )
        .with_row(_row(ids, "Probes"))
        .with_panel(probes_table)
        .with_panel(reach_timeline)
        .with_row(_row(ids, "Trends"))
        .with_panel(
            series(
                "Hop count",
                f"max by ({_KEYS}) (traceroute_hops{{{sel}}})",
                "none",
                "Hops to each target per run.",
            )
        )
        .with_panel(
            series(
                "Path changes",
                f"max by ({_KEYS}) (traceroute_path_changes_total{{{sel}}})",
                "none",
                "Path changes counted by the operator since each probe was created.",
            )
        )
        .with_panel(
            series(
                "Destination RTT",
                f"max by ({_KEYS}) (traceroute_destination_rtt_seconds{{{sel}}})",
                "s",
                "Mean round-trip time to each destination.",
            )
        )
        .with_panel(
            series(
                "Since last run",
                f"time() - max by (namespace, probe) "
                f"(traceroute_run_timestamp_seconds{{{probe_sel}}})",
                "s",
                "Age of each probe's latest result: a saw-tooth while healthy, a ramp "
                "when the probe stopped running.",
            )
        )
    )
    return _finish(builder)


def build_probe_dashboard() -> dict[str, Any]:
    """One probe and target: hop count, expected hops, per-hop table, RTT, node graph."""
    ids = _Ids()
    sel = 'namespace="$namespace", probe="$probe", target="$target"'
    probe_sel = 'namespace="$namespace", probe="$probe"'

    def stat_panel(title: str, expr: str, description: str) -> stat.Panel:
        return _stat(ids, title, expr, description, span=3)

    def hop_metric(metric: str, across_flows: str) -> str:
        """A per-TTL metric on one row per responder address (its flows in a label);
        '*' when the TTL was silent. ``across_flows`` (avg, min) folds per-flow series
        into one per TTL, as probes before the per-TTL metrics pushed them: the join
        keeps working while such groups are still in the Pushgateway."""
        per_ttl = f"{across_flows} by ({_HOP_KEYS}) ({metric}{{{sel}}})"
        return (
            f"max by (ttl, ip, flows) ({per_ttl} * on ({_HOP_KEYS}) group_right ()"
            f" traceroute_hop_info{{{sel}}}"
            f' or on ({_HOP_KEYS}) label_replace({per_ttl}, "ip", "*", "ip", ""))'
        )

    hop_columns = [
        ("A", "traceroute_hop_loss_ratio", "avg", "Loss"),
        ("B", "traceroute_hop_rtt_min_seconds", "min", "Best"),
        ("C", "traceroute_hop_rtt_avg_seconds", "avg", "Avg"),
    ]
    hop_table = (
        table.Panel()
        .id(ids())
        .title("Hops (latest run)")
        .description(
            "Like mtr: one row per TTL and responding address ('*' for a silent hop) with "
            "the Paris flows it answered; loss and RTT are per TTL across all flows. Loss "
            "at a hop whose later hops answer is usually ICMP rate limiting on that "
            "router, not real loss."
        )
        .datasource(DATASOURCE)
        .targets(
            [
                _query(hop_metric(metric, fold), ref=ref, instant=True, table_format=True)
                for ref, metric, fold, _ in hop_columns
            ]
        )
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            model.DataTransformerConfig(
                id_val="convertFieldType",
                options={
                    "conversions": [{"targetField": "ttl", "destinationType": "number"}],
                },
            )
        )
        .with_transformation(
            model.DataTransformerConfig(id_val="sortBy", options={"sort": [{"field": "ttl"}]})
        )
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": {"ttl": 0, "ip": 1, "flows": 2},
                    "renameByName": {
                        "ttl": "Hop",
                        "ip": "Address",
                        "flows": "Flows",
                        **{f"Value #{ref}": title for ref, _, _, title in hop_columns},
                    },
                },
            )
        )
        .height(12)
        .span(14)
        .unit("s")
        .override_by_name(
            "Loss",
            [
                model.DynamicConfigValue(id_val="unit", value="percentunit"),
                model.DynamicConfigValue(
                    id_val="thresholds",
                    value=_thresholds((None, "green"), (0.01, "orange"), (0.5, "red")).build(),
                ),
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
    )
    hop_table = hop_table.override_by_name(
        "Hop", [model.DynamicConfigValue(id_val="unit", value="none")]
    )

    edges_expr = (
        "max by (id, source, target) ("
        "label_replace(label_replace(label_join(traceroute_edge_info{" + sel + '}, "id", " -> ",'
        ' "from", "to"), "source", "$1", "from", "(.*)"), "target", "$1", "to", "(.*)"))'
    )
    path_graph = (
        nodegraph.Panel()
        .id(ids())
        .title("Path")
        .description(
            "Every hop seen in the latest run across all flows: 'origin' is the probe, "
            "'*N' a silent TTL N. ECMP shows as parallel branches."
        )
        .datasource(DATASOURCE)
        # refId "edges" tells the node graph this frame holds edges; nodes are
        # derived from them (no nodes frame, no Loki/Tempo needed)
        .with_target(_query(edges_expr, ref="edges", instant=True, table_format=True))
        .height(12)
        .span(10)
    )

    hops_vs_expected = (
        stat_panel(
            "Hops = expected",
            f"traceroute_hops{{{sel}}} == bool on ({_KEYS}) traceroute_expected_hops{{{sel}}}",
            "Green when the latest hop count equals spec.expectedHops, red otherwise.",
        )
        .mappings([_mapping({"1": ("as expected", "green"), "0": ("differs", "red")})])
        .no_value("no expectedHops")
    )

    builder = (
        _dashboard(
            "Traceroute probe",
            uid=PROBE_UID,
            description="One TracerouteProbe and target: path, hops, per-hop latency and loss.",
            multi=False,
            sel=sel,
        )
        .link(
            dash.DashboardLink("Overview")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(False)
            .include_vars(False)
            .keep_time(True)
        )
        .with_row(_row(ids, "Latest run"))
        .with_panel(
            stat_panel(
                "Reached",
                f"traceroute_reached{{{sel}}}",
                "Whether the latest run reached the destination.",
            ).mappings([_REACHED_MAPPING])
        )
        .with_panel(
            stat_panel(
                "Hops",
                f"traceroute_hops{{{sel}}}",
                "TTL at which the destination answered (or the last TTL with an answer).",
            ).thresholds(_thresholds((None, "blue")))
        )
        .with_panel(hops_vs_expected)
        .with_panel(
            stat_panel(
                "Expected hops",
                f"traceroute_expected_hops{{{sel}}}",
                "spec.expectedHops for this target.",
            )
            .thresholds(_thresholds((None, "blue")))
            .no_value("not set")
        )
        .with_panel(
            stat_panel(
                "Destination loss",
                f"traceroute_destination_loss_ratio{{{sel}}}",
                "Share of probes to the destination that got no answer.",
            )
            .unit("percentunit")
            .thresholds(_thresholds((None, "green"), (0.01, "orange"), (0.2, "red")))
        )
        .with_panel(
            stat_panel(
                "Destination RTT",
                f"traceroute_destination_rtt_seconds{{{sel}}}",
                "Mean round-trip time to the destination.",
            )
            .unit("s")
            .thresholds(_thresholds((None, "blue")))
        )
        .with_panel(
            stat_panel(
                "Path changes",
                f"max by ({_KEYS}) (traceroute_path_changes_total{{{sel}}})",
                "Path changes the operator confirmed since the probe was created.",
            ).thresholds(_thresholds((None, "green"), (1, "orange")))
        )
        .with_panel(
            stat_panel(
                "Last run",
                f"time() - max by (namespace, probe) "
                f"(traceroute_run_timestamp_seconds{{{probe_sel}}})",
                "Time since the latest result of this probe.",
            )
            .unit("s")
            .thresholds(_thresholds((None, "blue")))
        )
        .with_row(_row(ids, "Path"))
        .with_panel(hop_table)
        .with_panel(path_graph)
        .with_row(_row(ids, "Over time"))
        .with_panel(
            _timeseries(
                ids,
                "Hop count",
                [
                    _query(f"traceroute_hops{{{sel}}}", ref="A", legend="hops"),
                    _query(f"traceroute_expected_hops{{{sel}}}", ref="B", legend="expected"),
                ],
                description="Hops per run; the dashed line is spec.expectedHops.",
            )
            .line_interpolation(common.LineInterpolation.STEP_AFTER)
            .decimals(0)
            .override_by_name(
                "expected",
                [
                    model.DynamicConfigValue(
                        id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                    ),
                    model.DynamicConfigValue(
                        id_val="color", value={"mode": "fixed", "fixedColor": "green"}
                    ),
                ],
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Destination RTT and loss",
                [
                    _query(f"traceroute_destination_rtt_seconds{{{sel}}}", ref="A", legend="RTT"),
                    _query(f"traceroute_destination_loss_ratio{{{sel}}}", ref="B", legend="loss"),
                ],
                unit="s",
            ).override_by_name(
                "loss",
                [
                    model.DynamicConfigValue(id_val="unit", value="percentunit"),
                    model.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                    model.DynamicConfigValue(id_val="custom.drawStyle", value="bars"),
                ],
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "RTT per hop",
                [
                    _query(
                        f"avg by (ttl) (traceroute_hop_rtt_avg_seconds{{{sel}}})",
                        legend="hop {{ttl}}",
                    )
                ],
                description="Mean RTT per TTL across flows.",
                unit="s",
                height=9,
            )
        )
        .with_panel(
            _timeseries(
                ids,
                "Loss per hop",
                [
                    _query(
                        f"avg by (ttl) (traceroute_hop_loss_ratio{{{sel}}})", legend="hop {{ttl}}"
                    )
                ],
                description="Loss per TTL across flows (rate-limited hops show loss too).",
                unit="percentunit",
                height=9,
            )
        )
    )
    return _finish(builder)


def _finish(builder: dash.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON, with the annotation fields the SDK lacks."""
    encoded = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    annotations = encoded.get("annotations", {}).get("list", [])
    for annotation in annotations:
        annotation.update(_ANNOTATION_EXTRAS.get(annotation.get("name"), {}))
    return dict(encoded)


def build_dashboards() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON."""
    return {OVERVIEW_UID: build_overview_dashboard(), PROBE_UID: build_probe_dashboard()}


@functools.lru_cache(maxsize=1)
def _dashboard_texts() -> dict[str, str]:
    # the dashboards do not depend on the settings; the operator asks on every reconcile
    return {uid: json.dumps(d, indent=2, sort_keys=True) for uid, d in build_dashboards().items()}


def build_dashboard_configmaps(settings: MonitoringSettings) -> list[dict[str, Any]]:
    """ConfigMaps holding both dashboards, labelled for the Grafana sidecar."""
    texts = _dashboard_texts()
    maps = []
    for name, uid in ((OVERVIEW_CONFIGMAP, OVERVIEW_UID), (PROBE_CONFIGMAP, PROBE_UID)):
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": settings.dashboards_namespace,
            "labels": {
                **common_labels("dashboards"),
                settings.dashboard_label_key: settings.dashboard_label_value,
            },
        }
        if settings.dashboard_folder:
            metadata["annotations"] = {
                settings.dashboard_folder_annotation_key: settings.dashboard_folder
            }
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata,
                "data": {f"{uid}.json": texts[uid]},
            }
        )
    return maps
