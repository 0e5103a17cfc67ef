"""Sockets for probing: ICMP ping (datagram) and raw sockets, UDP datagram, raw TCP,
and unprivileged TCP "connect" probes.

The unprivileged paths read ICMP errors from the socket error queue: ``IP_RECVERR`` (11)
and ``IPV6_RECVERR`` (25) make the kernel queue Time Exceeded / Unreachable with the
offender address, so no capability is needed. A TCP socket in SYN_SENT queues the ICMP
error of its SYN the same way (tcp_v4_err / tcp_v6_err -> ip(v6)_icmp_error). Python only
names these constants from 3.14, hence the literals (from linux/in.h, linux/in6.h).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from .packets import IP_RECVERR, IPV6_RECVERR, SO_TIMESTAMPNS
from .result import errno_text

MSG_ERRQUEUE = 0x2000
_DRAIN_LIMIT = 256  # bounded per wake-up; the loop comes back for the rest
# Whole ICMP errors (IPv6 quotes up to 1280 bytes, RFC 4884 extensions on top): a cut-off
# one would fail its checksum.
_RECV_SIZE = 4096

# A datagram socket with IP_RECVERR sets sk_err for every ICMP error it queues (any errno
# the kernel maps an ICMP type/code to, and ee_origin values when the error queue is read
# with more entries behind), and the next send or data read reports that error instead
# of doing its job. Such errors belong to earlier replies (forged ones included), never
# to this call; only these errnos mean the call itself is wrong (a bug, raised as is).
_BUG_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK, errno.EFAULT})
# A send that fails this often in a row, with the pending error read away before every
# attempt, failed on its own: a pending error is consumed by the attempt it fails.
_SEND_ATTEMPTS = 3
_PERMISSION_ERRNOS = frozenset({errno.EPERM, errno.EACCES})


class SendError(OSError):
    """The kernel refused to send a probe (no route, a local firewall, a bad scope): the
    target cannot be traced from here. ``str()`` is the kernel's own error."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))

    def __str__(self) -> str:
        return errno_text(self)


class SocketOpenError(Exception):
    """A probing socket could not be opened; ``kind`` is ``permission`` or ``socket``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _af(family: int) -> socket.AddressFamily:
    return socket.AF_INET if family == 4 else socket.AF_INET6


def _any_address(family: int) -> str:
    return "0.0.0.0" if family == 4 else "::"


@dataclass
class Received:
    """One message read: for the error queue, ``address`` and ``port`` are the original
    destination of the packet the error quotes (the kernel's ``msg_name``)."""

    data: bytes
    ancdata: list[tuple[int, int, bytes]]
    address: str | None
    rx_ns: int
    from_error_queue: bool
    port: int | None = None


class ProbeSocket:
    """One socket plus what it is for. Keeps a wrapper library's socket object alive (it
    owns the fd) when one opened the socket."""

    def __init__(self, sock: socket.socket, family: int, owner: Any = None) -> None:
        self.sock = sock
        self.family = family
        self._owner = owner
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # user-space receive time is the fallback
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def fileno(self) -> int:
        return self.sock.fileno()

    def enable_recverr(self) -> None:
        if self.family == 4:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        else:
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)

    def set_ttl(self, ttl: int) -> None:
        if self.family == 4:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        else:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)

    def send(self, data: bytes, address: tuple[Any, ...] | None, ttl: int) -> int:
        """Send with the given TTL; returns the send time (ns since the epoch).

        A queued ICMP error of an earlier probe sets the socket error, which the next
        send would report instead of sending: read it away first (SO_ERROR clears it).
        One that arrives in between fails the attempt and is consumed by it; an error
        that repeats on every attempt is the kernel's answer to this send: SendError.
        """
        self.set_ttl(ttl)
        code = errno.EIO
        for _ in range(_SEND_ATTEMPTS):
            self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            sent_ns = time.time_ns()
            try:
                if address is None:
                    self.sock.send(data)
                else:
                    self.sock.sendto(data, address)
                return sent_ns
            except OSError as err:
                if err.errno is None or err.errno in _BUG_ERRNOS:
                    raise
                code = err.errno
        raise SendError(code)

    def drain(self, *, error_queue: bool) -> list[Received]:
        """Everything readable right now (bounded), error queue first."""
        out: list[Received] = []
        if error_queue:
            out.extend(self._read(MSG_ERRQUEUE))
        out.extend(self._read(0))
        return out

    def _read(self, flags: int) -> list[Received]:
        out: list[Received] = []
        for _ in range(_DRAIN_LIMIT):
            try:
                data, ancdata, _msg_flags, address = self.sock.recvmsg(_RECV_SIZE, 512, flags)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as err:
                if flags & MSG_ERRQUEUE or err.errno in _BUG_ERRNOS | {errno.EINVAL}:
                    raise
                continue  # a pending error reported on the data path: consumed, read on
            rx_ns = time.time_ns()
            host = address[0] if isinstance(address, tuple) and address else None
            port = address[1] if isinstance(address, tuple) and len(address) > 1 else None
            out.append(Received(data, list(ancdata), host, rx_ns, bool(flags & MSG_ERRQUEUE), port))
        return out

    def close(self) -> None:
        if self._owner is not None:
            self._owner.close()
        else:
            self.sock.close()


def open_icmp(family: int, *, raw: bool) -> ProbeSocket:
    """An ICMP socket: raw (needs CAP_NET_RAW) through icmplib's socket layer, or ping
    (datagram, allowed for the groups in net.ipv4.ping_group_range) opened directly: the
    unprivileged default must not pay icmplib's import (it pulls in asyncio, ~35 ms per
    start, more than a whole run)."""
    if raw:
        return _open_raw_icmp(family)
    proto = socket.IPPROTO_ICMP if family == 4 else socket.IPPROTO_ICMPV6
    try:
        sock = socket.socket(_af(family), socket.SOCK_DGRAM, proto)
    except OSError as err:
        if err.errno in _PERMISSION_ERRNOS:
            what = "ICMP ping sockets are not allowed for this group (net.ipv4.ping_group_range)"
            raise SocketOpenError("permission", f"{what}: {err.strerror}") from err
        message = f"cannot open ICMPv{family} socket: {err.strerror}"
        raise SocketOpenError("socket", message) from err
    return ProbeSocket(sock, family)


def _open_raw_icmp(family: int) -> ProbeSocket:
    # only a run with CAP_NET_RAW gets here, so only it imports icmplib
    from icmplib import ICMPv4Socket, ICMPv6Socket  # noqa: PLC0415
    from icmplib.exceptions import ICMPSocketError, SocketPermissionError  # noqa: PLC0415

    cls = ICMPv4Socket if family == 4 else ICMPv6Socket
    try:
        wrapper = cls(privileged=True)
    except SocketPermissionError as err:
        raise SocketOpenError("permission", f"raw ICMP sockets need CAP_NET_RAW: {err}") from err
    except ICMPSocketError as err:
        raise SocketOpenError("socket", f"cannot open ICMPv{family} socket: {err}") from err
    return ProbeSocket(wrapper.sock, family, owner=wrapper)


def bind_ping_ident(probe_socket: ProbeSocket, ident: int) -> None:
    """Ping sockets take their ICMP identifier from the bound "port"."""
    probe_socket.sock.bind((_any_address(probe_socket.family), ident))


def ping_ident(probe_socket: ProbeSocket) -> int:
    return int(probe_socket.sock.getsockname()[1])


def open_udp(family: int, src_port: int, destination: str, dst_port: int) -> ProbeSocket:
    """A UDP socket bound to ``src_port`` and connected to the destination. connect()
    looks the route up: its failure (no route, a prohibit route, a bad scope) is the
    kernel refusing to send there, a SendError."""
    sock = socket.socket(_af(family), socket.SOCK_DGRAM)
    try:
        sock.bind((_any_address(family), src_port))
    except OSError:
        sock.close()
        raise
    try:
        sock.connect((destination, dst_port))
    except OSError as err:
        sock.close()
        if err.errno is None or err.errno in _BUG_ERRNOS:
            raise
        raise SendError(err.errno) from None
    return ProbeSocket(sock, family)


def reserve_tcp_port(family: int, src_port: int) -> None:
    """Fail with EADDRINUSE now (not at the first probe) if ``src_port`` is taken."""
    with socket.socket(_af(family), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((_any_address(family), src_port))


def start_tcp_connect(
    family: int, src_port: int, destination: str, dst_port: int, ttl: int
) -> tuple[ProbeSocket, int]:
    """One SYN with the given TTL from a non-blocking connect(); returns the socket and
    the send time (ns since the epoch).

    The fixed source port keeps the Paris flow's 5-tuple; SO_REUSEADDR lets the next probe
    bind it while the previous socket is still bound; SO_LINGER 0 makes close() send a
    RST instead of leaving TIME_WAIT after a SYN-ACK.
    """
    sock = socket.socket(_af(family), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        probe_socket = ProbeSocket(sock, family)
        probe_socket.enable_recverr()
        probe_socket.set_ttl(ttl)
        sock.bind((_any_address(family), src_port))
        sent_ns = time.time_ns()
        code = sock.connect_ex((destination, dst_port))
    except OSError:
        sock.close()
        raise
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise SendError(code)  # the route lookup of connect(): the kernel's own error
    return probe_socket, sent_ns


@dataclass
class ConnectOutcome:
    """What a TCP connect probe learned: an ICMP error from the error queue, or the
    destination's answer (``connected``: SYN-ACK, ``refused``: RST), or ``pending``
    (nothing yet) / ``failed`` (a local error: no answer will come)."""

    kind: str  # icmp | connected | refused | pending | failed
    errors: list[Received]
    rx_ns: int
    error_code: int = 0


def connect_outcome(probe_socket: ProbeSocket) -> ConnectOutcome:
    queued = probe_socket._read(MSG_ERRQUEUE)
    now_ns = time.time_ns()
    if queued:
        return ConnectOutcome("icmp", queued, now_ns)
    err = probe_socket.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err == errno.ECONNREFUSED:
        return ConnectOutcome("refused", [], now_ns)
    if err != 0:
        return ConnectOutcome("failed", [], now_ns, err)
    try:
        probe_socket.sock.getpeername()
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return ConnectOutcome("pending", [], now_ns)
        raise
    return ConnectOutcome("connected", [], now_ns)


def open_raw(family: int, protocol: int) -> ProbeSocket:
    try:
        sock = socket.socket(_af(family), socket.SOCK_RAW, protocol)
    except OSError as err:
        if err.errno in _PERMISSION_ERRNOS:
            raise SocketOpenError(
                "permission", f"raw sockets need CAP_NET_RAW (protocol {protocol}): {err.strerror}"
            ) from err
        raise SocketOpenError("socket", f"cannot open raw socket: {err.strerror}") from err
    return ProbeSocket(sock, family)


def source_address(destination: str, family: int) -> str:
    """The local address the kernel would use towards ``destination`` (no packet sent);
    SendError when the kernel has no way there."""
    with socket.socket(_af(family), socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((destination, 9))
        except OSError as err:
            if err.errno is None or err.errno in _BUG_ERRNOS:
                raise
            raise SendError(err.errno) from None
        return str(sock.getsockname()[0])
