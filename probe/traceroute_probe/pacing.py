"""Pacing: one token bucket for the whole run's packet rate, and a model of every
responder's ICMP rate limit (Linux: a burst of 6 per source, then one per
``icmp_ratelimit`` ms), so that the schedule, not the router, decides which probe goes
when. Pure: times are passed in.

The model starts from full buckets, which is only true when no other run spent them: a
run may start right after another one (same node, same source address, same routers).
So silences are evidence too: :meth:`TokenModel.mark_empty` records that a router's
bucket was empty when a probe went unanswered (or was only just refilled), and the model
then waits for the refill before it lets more probes go to it."""

from __future__ import annotations

NS = 1_000_000_000


class TokenModel:
    """Token bucket per responder, fed with the send times of probes attributed to it."""

    def __init__(self, burst: int, interval: float) -> None:
        self.burst = float(burst)
        self.interval_ns = interval * NS
        self.sends: dict[str, list[int]] = {}
        self.empty: dict[str, list[int]] = {}  # times the bucket was seen (nearly) empty

    def mark_empty(self, key: str, at_ns: int) -> None:
        """The router's bucket had less than one token at ``at_ns`` (a drop, or the
        first answer after one): from then on it refills from zero."""
        self.empty.setdefault(key, []).append(at_ns)

    def add(self, key: str, sent_ns: int) -> None:
        self.sends.setdefault(key, []).append(sent_ns)

    def move(self, old: str | None, new: str | None, sent_ns: int) -> None:
        if old is not None:
            sends = self.sends.get(old)
            if sends and sent_ns in sends:
                sends.remove(sent_ns)
        if new is not None:
            self.add(new, sent_ns)

    def available_at(self, key: str, now_ns: int, planned: int = 0) -> int:
        """Earliest time (ns) at which one more probe to ``key`` stays within budget,
        counting ``planned`` probes released but not sent yet as sent now."""
        tokens = self.burst
        last: int | None = None
        # At one instant the sends go first: a drop seen at t left the bucket empty
        # after what was sent with it.
        events = [(t, True) for t in (*self.sends.get(key, ()), *([now_ns] * planned))]
        events += [(t, False) for t in self.empty.get(key, ())]
        for t, is_send in sorted(events, key=lambda e: (e[0], not e[1])):
            if last is not None:
                tokens = min(self.burst, tokens + (t - last) / self.interval_ns)
            # As in Linux, a probe beyond the bucket is dropped and spends nothing.
            tokens = max(0.0, tokens - 1.0) if is_send else min(tokens, 0.0)
            last = t
        if last is None:
            return now_ns
        tokens_now = min(self.burst, tokens + (now_ns - last) / self.interval_ns)
        if tokens_now >= 1.0:
            return now_ns
        return now_ns + int((1.0 - tokens_now) * self.interval_ns) + 1


class ReleasePlan:
    """The probes one release pass queued per responder, on top of the model's sends."""

    def __init__(self, model: TokenModel, now_ns: int) -> None:
        self.model = model
        self.now_ns = now_ns
        self.planned: dict[str | None, int] = {}

    def ready_at(self, key: str) -> int:
        return self.model.available_at(key, self.now_ns, self.planned.get(key, 0))

    def fits(self, key: str | None) -> bool:
        """One more probe to ``key`` stays within its modelled burst (None: not limited)."""
        return key is None or self.ready_at(key) <= self.now_ns

    def plan(self, key: str | None) -> None:
        self.planned[key] = self.planned.get(key, 0) + 1


class PacketBucket:
    """The run's packet rate: ``rate`` per second, burst ``rate/4`` (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(1.0, rate / 4.0)
        self.burst = self.tokens
        self.last_ns = 0

    def refill(self, now_ns: int) -> None:
        if self.last_ns:
            self.tokens = min(self.burst, self.tokens + (now_ns - self.last_ns) / NS * self.rate)
        self.last_ns = now_ns

    @property
    def has_token(self) -> bool:
        return self.tokens >= 1.0

    def take(self) -> None:
        self.tokens -= 1.0

    def next_token_at(self, now_ns: int) -> int:
        """When the next token is there (a bound on the wait, counted from ``now_ns``)."""
        missing = max(0.0, 1.0 - self.tokens) / self.rate
        return now_ns + int(missing * NS) + 1
