"""The transports: one class per way of probing, behind one small protocol
(:class:`~.base.Transport`), all unprivileged except the raw ones.

- ``icmp_ping``: ICMP echo through ping datagram sockets, one per flow;
- ``icmp_raw``: ICMP echo through one raw socket per family (CAP_NET_RAW);
- ``udp``: UDP through datagram sockets, one per flow;
- ``tcp_connect``: TCP SYN through non-blocking connect(), one probe in flight per flow;
- ``tcp_raw``: TCP SYN through raw TCP + ICMP sockets per family (CAP_NET_RAW).

Each matches what its sockets read to the probe it answers (identifier or ports, nonce,
run token) and hands the schedule typed events; ``pool`` picks one per target.
"""

from .base import Destination, Endpoint, RunIdentity, Transport, Watcher
from .pool import TransportPool

__all__ = ["Destination", "Endpoint", "RunIdentity", "Transport", "TransportPool", "Watcher"]
