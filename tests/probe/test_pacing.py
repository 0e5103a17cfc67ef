"""Pacing building blocks: the per-responder rate-limit model and the run's packet bucket."""

from __future__ import annotations

from traceroute_probe.pacing import PacketBucket, ReleasePlan, TokenModel

S = 1_000_000_000


def test_token_model_follows_linux_burst_then_one_per_interval() -> None:
    model = TokenModel(burst=6, interval=1.0)
    t0 = 100 * S
    for i in range(6):
        assert model.available_at("r1", t0 + i) == t0 + i
        model.add("r1", t0 + i)
    wait = model.available_at("r1", t0 + 10)
    assert t0 + S - 100 < wait <= t0 + S + 10  # the 7th waits about one interval
    assert model.available_at("r2", t0) == t0  # another router has its own bucket
    model.move("r1", "r2", t0)
    assert model.available_at("r1", t0 + 10) == t0 + 10


def test_release_plan_counts_planned_probes_as_sent_now() -> None:
    model = TokenModel(burst=6, interval=1.0)
    t0 = 100 * S
    for i in range(4):
        model.add("r1", t0 + i)
    plan = ReleasePlan(model, t0 + 10)
    assert plan.fits(None)  # answers that are not rate limited always fit
    plan.plan("r1")
    assert plan.fits("r1")  # 5 of 6
    plan.plan("r1")
    assert not plan.fits("r1")  # 6 of 6 taken: the 7th would be dropped by the router
    assert plan.ready_at("r1") > t0 + S // 2
    assert plan.fits("r2")


def test_packet_bucket_bursts_a_quarter_second_then_paces() -> None:
    bucket = PacketBucket(rate=200.0)
    t0 = 100 * S
    bucket.refill(t0)
    taken = 0
    while bucket.has_token:
        bucket.take()
        taken += 1
    assert taken == 50  # burst rate/4
    wake = bucket.next_token_at(t0)
    assert wake == t0 + S // 200 + 1  # one token per 5 ms
    bucket.refill(wake)
    assert bucket.has_token
    bucket.refill(t0 + 10 * S)
    assert bucket.tokens == 50.0  # never more than the burst


def test_slow_packet_rate_still_has_one_token() -> None:
    bucket = PacketBucket(rate=2.0)
    assert bucket.burst == 1.0 and bucket.has_token


def test_an_empty_bucket_refills_from_zero_and_drops_spend_nothing() -> None:
    model = TokenModel(burst=6, interval=1.0)
    t0 = 100 * S
    model.add("r1", t0)
    model.mark_empty("r1", t0)  # the probe was dropped: another run spent the bucket
    assert model.available_at("r1", t0 + 1) > t0 + S - 10
    assert model.available_at("r1", t0 + S) == t0 + S
    for i in range(10):  # sends beyond the bucket do not push the next token later
        model.add("r1", t0 + S + i)
    assert model.available_at("r1", t0 + S + 20) <= t0 + 2 * S + 20
