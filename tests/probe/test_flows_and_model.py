"""Flows, the rate-limit token model and the completion rules' building blocks."""

from __future__ import annotations

from traceroute_probe.engine import _TokenModel
from traceroute_probe.flows import derive_flows

S = 1_000_000_000


def test_flows_are_stable_and_distinct() -> None:
    first = derive_flows("default/web/example.org", 8, 33434)
    again = derive_flows("default/web/example.org", 8, 33434)
    other = derive_flows("default/web/example.net", 8, 33434)
    assert first == again
    assert first != other
    assert len({f.icmp_id for f in first}) == 8
    assert len({f.src_port for f in first}) == 8
    assert all(1 <= f.flow_sum <= 0xFFFE and f.dst_port == 33434 for f in first)


def test_token_model_follows_linux_burst_then_one_per_interval() -> None:
    model = _TokenModel(burst=6, interval=1.0)
    t0 = 100 * S
    for i in range(6):
        assert model.available_at("r1", t0 + i) == t0 + i
        model.add("r1", t0 + i)
    wait = model.available_at("r1", t0 + 10)
    assert t0 + S - 100 < wait <= t0 + S + 10  # the 7th waits about one interval
    assert model.available_at("r2", t0) == t0  # another router has its own bucket
    model.move("r1", "r2", t0)
    assert model.available_at("r1", t0 + 10) == t0 + 10
