"""Socket error handling without a network: a fake socket that reports errors the way a
Linux datagram socket with IP_RECVERR does (a pending sk_err fails one call and is gone)."""

from __future__ import annotations

import errno
import socket
from typing import Any, cast

import pytest
from traceroute_probe.sockets import MSG_ERRQUEUE, ProbeSocket, SendError


class _FakeSocket:
    """``pending``: errnos ICMP errors left in sk_err, one consumed per failing call;
    ``refuse``: the errno every send fails with (the kernel's own answer), or None."""

    def __init__(self, pending: list[int], refuse: int | None = None) -> None:
        self.pending = list(pending)
        self.refuse = refuse
        self.sent: list[bytes] = []
        self.so_error_reads = 0
        self.arrive_before_send: list[int] = []  # an error arriving right after SO_ERROR

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: Any) -> None:
        pass

    def getsockopt(self, level: int, option: int) -> int:
        if option == socket.SO_ERROR:
            self.so_error_reads += 1
            value = self.pending.pop(0) if self.pending else 0
            if self.arrive_before_send:
                self.pending.append(self.arrive_before_send.pop(0))
            return value
        return 0

    def _fail_pending(self) -> None:
        if self.pending:
            code = self.pending.pop(0)
            raise OSError(code, "pending")

    def sendto(self, data: bytes, address: Any) -> int:
        self._fail_pending()
        if self.refuse is not None:
            raise OSError(self.refuse, "refused")
        self.sent.append(data)
        return len(data)

    def recvmsg(self, size: int, ancsize: int, flags: int) -> Any:
        if flags & MSG_ERRQUEUE:
            raise BlockingIOError
        self._fail_pending()
        raise BlockingIOError


def _probe_socket(fake: _FakeSocket) -> ProbeSocket:
    return ProbeSocket(cast(socket.socket, fake), 4)


def test_a_pending_error_is_read_away_before_the_send() -> None:
    fake = _FakeSocket(pending=[errno.EHOSTUNREACH])
    _probe_socket(fake).send(b"x", ("10.0.0.1", 0), 3)
    assert fake.sent == [b"x"]


@pytest.mark.parametrize(
    "code",
    # Time Exceeded, and unreachable codes 5, 7, 8 (source route failed, host unknown,
    # host isolated), and the ee_origin value a drained error queue leaves behind.
    [errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.EHOSTDOWN, errno.ENONET, errno.ENOENT],
)
def test_errors_arriving_between_attempts_never_fail_the_send(code: int) -> None:
    fake = _FakeSocket(pending=[])
    fake.arrive_before_send = [code, code]  # a burst: two attempts fail on pending errors
    _probe_socket(fake).send(b"x", ("10.0.0.1", 0), 3)
    assert fake.sent == [b"x"]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (errno.ENETUNREACH, "ENETUNREACH: Network is unreachable"),
        (errno.EPERM, "EPERM: Operation not permitted"),
        (errno.EINVAL, "EINVAL: Invalid argument"),
    ],
)
def test_an_error_on_every_attempt_is_the_kernels_answer(code: int, text: str) -> None:
    fake = _FakeSocket(pending=[], refuse=code)
    with pytest.raises(SendError) as caught:
        _probe_socket(fake).send(b"x", ("10.0.0.1", 0), 3)
    assert caught.value.errno == code and str(caught.value) == text
    assert fake.sent == []


def test_a_bug_is_raised_as_is() -> None:
    fake = _FakeSocket(pending=[], refuse=errno.EBADF)
    with pytest.raises(OSError) as caught:
        _probe_socket(fake).send(b"x", ("10.0.0.1", 0), 3)
    assert not isinstance(caught.value, SendError)


def test_pending_errors_on_the_data_path_are_consumed_not_raised() -> None:
    fake = _FakeSocket(pending=[errno.EHOSTDOWN, errno.ENOENT, errno.ECONNREFUSED])
    assert _probe_socket(fake).drain(error_queue=True) == []
    assert fake.pending == []
