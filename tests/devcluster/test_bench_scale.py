"""The scale benchmark's inputs: the exposition sizes its table reports, one body per probe."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from traceroute_operator.pushgateway_policy import shard_for

from devcluster.bench import scale
from devcluster.bench.synthetic import TARGET


def _series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_old_exposition_is_the_per_flow_one_issue_13_measured() -> None:
    old = scale.SETUPS["old"].exposition()
    assert scale.series_count(old) == len(_series(old)) == 407
    names = {name for name, _ in _series(old)}
    assert {"traceroute_hop_probes_sent", "traceroute_hop_rtt_stddev_seconds"} <= names
    assert scale.SETUPS["old"].consistency_check


def test_new_exposition_is_the_probes_own() -> None:
    new = scale.SETUPS["new"].exposition()
    assert scale.series_count(new) == len(_series(new)) == 100
    assert not scale.SETUPS["new"].consistency_check


def test_every_probe_pushes_its_own_target_to_its_own_group() -> None:
    bodies = scale.probe_bodies(scale.SETUPS["new"].exposition(), 300)
    assert len(set(bodies)) == 300
    assert all(TARGET.encode() not in body for body in bodies)
    assert len({scale.group_path(i) for i in range(300)}) == 300


def test_table_has_a_row_per_measurement() -> None:
    row = scale.Row("new", 10, 98, 8.9)
    row.steady.latencies = [0.001, 0.002, 0.003]
    row.burst.latencies, row.burst.failed = [0.01, scale.PUSH_TIMEOUT_S], 1
    row.scrape_burst = scale.Scrapes(12.5, 1)
    row.cores = [0.1, 0.5]
    lines = scale.table([row]).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| new | 1 | 10 | 98 |")
    assert "1 failed" in lines[2] and "0.10 / 0.50 cores" in lines[2]
    assert "12.50 s (1 failed)" in lines[2]


def test_shards_are_the_operators_assignment() -> None:
    """The bench puts each probe on the shard the operator's policy picks for it."""

    urls = ["http://127.0.0.1:1001", "http://127.0.0.1:1002", "http://127.0.0.1:1003"]
    shards = scale.assign(urls, 300)
    assert shards == [
        urls.index(shard_for(urls, f"bench/{scale.probe_name(i)}")) for i in range(300)
    ]
    assert set(shards) == {0, 1, 2}  # every shard gets probes
    assert scale.SETUPS["sharded"].shards == scale.DEFAULT_SHARDS > 1


def test_scrape_target_is_missed_when_a_shard_is_slow() -> None:
    row = scale.Row("sharded", 10, 100, 9.0, 2)
    row.shard_scrapes = [
        scale.ShardScrapes("a", 1.0, 2.0, 2.5, 100.0),
        scale.ShardScrapes("b", 1.0, 4.0, 6.0, 100.0),
    ]
    assert not row.scrapes_ok and "MISSED" in scale.table([row])
    row.shard_scrapes[1] = scale.ShardScrapes("b", 1.0, 2.0, 4.9, 100.0)
    assert row.scrapes_ok
