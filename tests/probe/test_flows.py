"""Stable Paris flows."""

from __future__ import annotations

from traceroute_probe.flows import derive_flows


def test_flows_are_stable_and_distinct() -> None:
    first = derive_flows("default/web/example.org", 8, 33434)
    again = derive_flows("default/web/example.org", 8, 33434)
    other = derive_flows("default/web/example.net", 8, 33434)
    assert first == again
    assert first != other
    assert len({f.icmp_id for f in first}) == 8
    assert len({f.src_port for f in first}) == 8
    assert all(1 <= f.flow_sum <= 0xFFFE and f.dst_port == 33434 for f in first)
