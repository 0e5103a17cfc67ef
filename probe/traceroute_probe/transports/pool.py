"""Which transport carries a target: by protocol and ``--socket`` mode, raw sockets first
where allowed (``auto`` falls back to unprivileged sockets on a permission error).

Each transport module is imported when a run first needs it: a run uses one or two of
the five, and every module costs start-up time (tests/probe/test_startup.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sockets import SocketOpenError
from .base import Destination, RunIdentity, Transport, Watcher

if TYPE_CHECKING:
    from ..flows import Flow
    from ..options import WaveOptions
    from .icmp_ping import IcmpPingTransport
    from .icmp_raw import IcmpRawTransport
    from .tcp_connect import TcpConnectTransport
    from .tcp_raw import TcpRawTransport
    from .udp import UdpTransport


class TransportPool:
    """The transports of one wave, each made on first use and shared by its targets."""

    def __init__(self, opts: WaveOptions, ids: RunIdentity, watcher: Watcher) -> None:
        self.opts = opts
        self.ids = ids
        self.watcher = watcher
        self.icmp_ping: IcmpPingTransport | None = None
        self.icmp_raw: IcmpRawTransport | None = None
        self.udp: UdpTransport | None = None
        self.tcp_connect: TcpConnectTransport | None = None
        self.tcp_raw: TcpRawTransport | None = None

    def open(self, destination: Destination, flows: list[Flow]) -> Transport:
        """The transport now carrying ``destination``; raises SocketOpenError or OSError."""
        protocol = self.opts.protocol
        if protocol == "icmp":
            return self._open_icmp(destination, flows)
        if protocol == "udp":
            from .udp import UdpTransport  # noqa: PLC0415 (start-up: only when used)

            self.udp = self.udp or UdpTransport(self.ids, self.watcher, self.opts.socket_mode)
            self.udp.open(destination, flows)
            return self.udp
        return self._open_tcp(destination, flows)

    def _open_icmp(self, destination: Destination, flows: list[Flow]) -> Transport:
        mode = self.opts.socket_mode
        if mode != "dgram":
            from .icmp_raw import IcmpRawTransport  # noqa: PLC0415 (start-up: only when used)

            self.icmp_raw = self.icmp_raw or IcmpRawTransport(self.ids, self.watcher)
            try:
                self.icmp_raw.open(destination, flows)
                return self.icmp_raw
            except SocketOpenError as err:
                if mode == "raw" or err.kind != "permission":
                    raise
        from .icmp_ping import IcmpPingTransport  # noqa: PLC0415 (start-up: only when used)

        self.icmp_ping = self.icmp_ping or IcmpPingTransport(self.ids, self.watcher)
        self.icmp_ping.open(destination, flows)
        return self.icmp_ping

    def _open_tcp(self, destination: Destination, flows: list[Flow]) -> Transport:
        mode = self.opts.socket_mode
        if mode != "dgram":
            from .tcp_raw import TcpRawTransport  # noqa: PLC0415 (start-up: only when used)

            self.tcp_raw = self.tcp_raw or TcpRawTransport(
                self.ids, self.watcher, self.opts.dst_port
            )
            try:
                self.tcp_raw.open(destination, flows)
                return self.tcp_raw
            except SocketOpenError as err:
                if mode == "raw" or err.kind != "permission":
                    raise SocketOpenError(
                        err.kind,
                        "tcp SYN probing with --socket raw needs raw sockets (CAP_NET_RAW); "
                        "--socket auto or dgram probes with connect() instead",
                    ) from err
        from .tcp_connect import TcpConnectTransport  # noqa: PLC0415 (start-up: only when used)

        self.tcp_connect = self.tcp_connect or TcpConnectTransport(self.ids, self.watcher)
        self.tcp_connect.open(destination, flows)
        return self.tcp_connect

    def close(self) -> None:
        for transport in (
            self.tcp_connect,
            self.icmp_ping,
            self.udp,
            self.icmp_raw,
            self.tcp_raw,
        ):
            if transport is not None:
                transport.close()
