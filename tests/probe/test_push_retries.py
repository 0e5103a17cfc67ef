"""The probe's push: bounded attempts, full jitter, an overloaded gateway's Retry-After."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge
from traceroute_probe.metrics import (
    PushError,
    PushSettings,
    push,
    retry_after_seconds,
    retry_wait,
)


class _Gateway(http.server.BaseHTTPRequestHandler):
    replies: list[tuple[int, dict[str, str]]] = []
    seen: list[str] = []

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append(self.path)
        code, headers = self.replies.pop(0) if self.replies else (200, {})
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    handler = type("Gateway", (_Gateway,), {"replies": [], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("traceroute_test", "t", registry=registry).set(1)
    return registry


def test_retry_after_waits_as_long_as_the_gateway_asks(
    gateway: tuple[str, type[_Gateway]],
) -> None:
    url, handler = gateway
    handler.replies = [(503, {"Retry-After": "3"}), (429, {"Retry-After": "1"})]
    waits: list[float] = []
    push(_registry(), PushSettings(url, "ns", "p"), sleep=waits.append, rand=lambda: 0.5)
    assert len(handler.seen) == 3
    settings = PushSettings(url, "ns", "p")
    assert waits == [3 + 0.5 * settings.backoff, 1 + 0.5 * settings.backoff]


def test_a_retry_after_beyond_the_cap_ends_the_retries(
    gateway: tuple[str, type[_Gateway]],
) -> None:
    url, handler = gateway
    handler.replies = [(503, {"Retry-After": "600"})]
    waits: list[float] = []
    with pytest.raises(PushError, match="Retry-After 600"):
        push(_registry(), PushSettings(url, "ns", "p"), sleep=waits.append)
    assert len(handler.seen) == 1
    assert waits == []


def test_attempts_are_bounded_and_waits_fully_jittered(
    gateway: tuple[str, type[_Gateway]],
) -> None:
    url, handler = gateway
    handler.replies = [(500, {})] * 10
    waits: list[float] = []
    settings = PushSettings(url, "ns", "p", attempts=4)
    with pytest.raises(PushError, match="HTTP 500"):
        push(_registry(), settings, sleep=waits.append, rand=lambda: 0.999)
    assert len(handler.seen) == 4
    assert len(waits) == 3
    # rand -> 1 reaches the exponential ceiling: backoff * 2**k, capped
    assert waits == pytest.approx([0.999 * min(8.0, 0.5 * 2**k) for k in (1, 2, 3)])


def test_a_wrong_request_is_not_retried(gateway: tuple[str, type[_Gateway]]) -> None:
    url, handler = gateway
    handler.replies = [(400, {})] * 4
    with pytest.raises(PushError, match="HTTP 400"):
        push(_registry(), PushSettings(url, "ns", "p"), sleep=lambda _: None)
    assert len(handler.seen) == 1


def test_full_jitter_spans_zero_to_the_ceiling_and_is_capped() -> None:
    settings = PushSettings("http://x", "ns", "p", backoff=1.0, backoff_cap=8.0)
    assert retry_wait(settings, 1, None, 0.0) == 0.0
    assert retry_wait(settings, 2, None, 0.5) == 2.0
    assert retry_wait(settings, 10, None, 0.5) == 4.0  # capped at 8


def test_retry_after_forms() -> None:
    assert retry_after_seconds("7", now=0.0) == 7.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:00:10 GMT", now=40.0) == 0.0
    assert retry_after_seconds("soon", now=0.0) is None
    assert retry_after_seconds(None, now=0.0) is None
