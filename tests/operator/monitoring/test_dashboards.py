"""Dashboards: SDK model validation, structure, ConfigMaps for the Grafana sidecar."""

from __future__ import annotations

import json
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from traceroute_operator.monitoring import MonitoringSettings, build_dashboard_configmaps
from traceroute_operator.monitoring.dashboards import OVERVIEW_UID, PROBE_UID, build_dashboards

from tests.operator.monitoring.known_metrics import dashboard_queries

DASHBOARDS = build_dashboards()


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("uid", [OVERVIEW_UID, PROBE_UID])
def test_dashboard_round_trips_through_the_sdk_model(uid: str) -> None:
    """Parse the JSON with the SDK's typed model and encode it again: nothing is lost
    or renamed, so every field we emit is one the model knows (plus the annotation
    fields the model has no slot for, which _finish adds on purpose)."""
    original = DASHBOARDS[uid]
    parsed = Dashboard.from_json(original)
    again = json.loads(JSONEncoder(sort_keys=True).encode(parsed))
    extras = {"step", "useValueForTime", "titleFormat", "textFormat", "tagKeys"}
    stripped = json.loads(json.dumps(original))
    for annotation in stripped["annotations"]["list"]:
        for key in extras:
            annotation.pop(key, None)
    assert again == stripped


@pytest.mark.parametrize("uid", [OVERVIEW_UID, PROBE_UID])
def test_dashboard_structure(uid: str) -> None:
    dashboard = DASHBOARDS[uid]
    assert dashboard["uid"] == uid and len(uid) <= 40
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "probe", "target"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    # panels must not overlap on the grid
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    (annotation,) = dashboard["annotations"]["list"]
    assert "traceroute_path_last_change_timestamp_seconds" in annotation["expr"]
    assert annotation["useValueForTime"] is True


def test_probe_dashboard_has_the_drill_down_panels() -> None:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for panel in panels(DASHBOARDS[PROBE_UID]):
        by_type.setdefault(panel["type"], []).append(panel)
    titles = {p["title"]: p for p in panels(DASHBOARDS[PROBE_UID])}

    (graph,) = by_type["nodeGraph"]
    (edges,) = graph["targets"]
    assert edges["refId"] == "edges" and edges["format"] == "table" and edges["instant"]

    versus = titles["Hops = expected"]
    mapping = versus["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert mapping["1"]["color"] == "green" and mapping["0"]["color"] == "red"
    assert "== bool" in versus["targets"][0]["expr"]

    table = titles["Hops (latest run)"]
    assert {t["refId"] for t in table["targets"]} == set("ABC")
    renames = next(t for t in table["transformations"] if t["id"] == "organize")["options"][
        "renameByName"
    ]
    assert {"Address", "Flows", "Loss", "Best", "Avg"} <= set(renames.values())

    hop_count = titles["Hop count"]
    assert [t["expr"].split("{")[0] for t in hop_count["targets"]] == [
        "traceroute_hops",
        "traceroute_expected_hops",
    ]
    assert "RTT per hop" in titles


def test_overview_links_to_the_drill_down() -> None:
    table = next(p for p in panels(DASHBOARDS[OVERVIEW_UID]) if p["type"] == "table")
    links = [
        prop["value"]
        for override in table["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "links"
    ]
    assert links and f"/d/{PROBE_UID}/" in links[0][0]["url"]


def test_every_panel_query_is_listed() -> None:
    queries = dashboard_queries(DASHBOARDS[PROBE_UID])
    n_targets = sum(len(p["targets"]) for p in panels(DASHBOARDS[PROBE_UID]))
    assert len(queries) == n_targets + 1  # + the annotation


def test_configmaps_for_the_sidecar() -> None:
    settings = MonitoringSettings(
        dashboards_namespace="grafana",
        dashboard_label_key="grafana_dashboard",
        dashboard_label_value="1",
        dashboard_folder_annotation_key="grafana_folder",
        dashboard_folder="Network",
    )
    maps = build_dashboard_configmaps(settings)
    assert [m["metadata"]["name"] for m in maps] == [
        "traceroute-dashboard-overview",
        "traceroute-dashboard-probe",
    ]
    for cm in maps:
        assert cm["metadata"]["namespace"] == "grafana"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Network"}
        ((key, text),) = cm["data"].items()
        loaded = json.loads(text)
        assert key == f"{loaded['uid']}.json"
        # ConfigMaps hold at most 1 MiB; stay far below for kubectl apply's annotation
        assert len(text) < 256 * 1024
    no_folder = build_dashboard_configmaps(MonitoringSettings(dashboard_folder=""))
    assert "annotations" not in no_folder[0]["metadata"]
