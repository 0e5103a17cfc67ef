"""User-space delay links for the network lab.

The kernel of the test machine has no ``netem`` qdisc, so ``tc`` cannot add
latency. A delay link is instead a pair of TUN devices, one in each node's
network namespace, joined by a relay process that reads every packet from one
TUN device and writes it into the other after a fixed one-way delay (and the
same in the other direction). The devices are layer-3 point-to-point links,
so IPv4, IPv6 and the ICMP errors routers send back all cross them like over
a veth pair.

One relay process serves every delay link of a lab. It owns the TUN file
descriptors; the devices are not persistent, so they vanish with the relay.
The relay exits when its parent dies (its stdin pipe reaches EOF, or its
parent pid changes), so a crashed test run does not leave it behind.

Run by :class:`DelayRelay` as ``python delaylink.py --tag <lab prefix>`` with
the link specs as JSON on stdin; it answers ``ready`` on stdout once all
devices exist.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
MAX_PACKET = 65535
# Packets read per device per wake-up: bounds the time one busy direction can
# hold up the delivery of packets that are already due elsewhere.
READ_BATCH = 64
PARENT_CHECK_INTERVAL_S = 0.5
READY_TIMEOUT_S = 15.0
DEFAULT_QUEUE_PACKETS = 4096


@dataclass(frozen=True)
class DelayLinkSpec:
    """One delay link: TUN device ``dev_a`` in ``netns_a`` <-> ``dev_b`` in ``netns_b``."""

    netns_a: str
    dev_a: str
    netns_b: str
    dev_b: str
    delay_ms: float
    # Tail-drop limit per direction, like a router's output queue.
    queue_packets: int = DEFAULT_QUEUE_PACKETS

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")
        if self.queue_packets < 1:
            raise ValueError("queue_packets must be >= 1")
        for dev in (self.dev_a, self.dev_b):
            if not 0 < len(dev) < IFNAMSIZ:
                raise ValueError(f"bad interface name {dev!r}")


class DelayRelayError(RuntimeError):
    """The relay process could not create its devices."""


class DelayRelay:
    """Parent-side handle of the relay process serving a set of delay links."""

    def __init__(self, specs: Sequence[DelayLinkSpec], tag: str) -> None:
        self.specs = list(specs)
        self.tag = tag
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the relay and wait until every TUN device exists."""
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--tag", self.tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        config = json.dumps({"links": [asdict(s) for s in self.specs]}) + "\n"
        proc.stdin.write(config.encode())
        # stdin stays open: its EOF is how the relay learns that we are gone.
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.stop()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise DelayRelayError(f"delay relay did not start: {line!r} {err.strip()}")

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# --- relay process ----------------------------------------------------------


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _open_tun(netns: str, dev: str) -> int:
    """Create TUN device ``dev`` inside ``netns``; return its file descriptor.

    The device belongs to the network namespace the opener is in when it opens
    /dev/net/tun, so enter that namespace first.
    """
    _setns(f"/run/netns/{netns}")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    ifreq = struct.pack("16sH22x", dev.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifreq)
    return fd


@dataclass
class _Direction:
    src_fd: int
    dst_fd: int
    delay_s: float
    limit: int
    queue: collections.deque[tuple[float, bytes]]
    dropped: int = 0


def _open_directions(specs: list[DelayLinkSpec]) -> list[_Direction]:
    """Both directions of every link, their TUN devices opened inside the lab namespaces."""
    root_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    directions: list[_Direction] = []
    for spec in specs:
        fd_a = _open_tun(spec.netns_a, spec.dev_a)
        fd_b = _open_tun(spec.netns_b, spec.dev_b)
        delay_s = spec.delay_ms / 1000.0
        directions.append(_Direction(fd_a, fd_b, delay_s, spec.queue_packets, collections.deque()))
        directions.append(_Direction(fd_b, fd_a, delay_s, spec.queue_packets, collections.deque()))
    # Leave the lab namespaces: the relay must not keep one of them as its own.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns(root_ns, CLONE_NEWNET)
    os.close(root_ns)
    return directions


def _release_due(directions: list[_Direction], now: float, next_due: float) -> float:
    """Write out every packet whose delay is over; the earliest time another one is due."""
    for direction in directions:
        queue = direction.queue
        while queue and queue[0][0] <= now:
            _, packet = queue.popleft()
            try:
                os.write(direction.dst_fd, packet)
            except OSError:
                direction.dropped += 1  # device down or packet refused: lost
        if queue and queue[0][0] < next_due:
            next_due = queue[0][0]
    return next_due


def _take_in(direction: _Direction) -> None:
    """Queue what arrived on one device (a bounded batch), dropping past the queue limit."""
    arrived = time.monotonic()
    for _ in range(READ_BATCH):
        try:
            packet = os.read(direction.src_fd, MAX_PACKET)
        except (BlockingIOError, InterruptedError):
            break
        if len(direction.queue) >= direction.limit:
            direction.dropped += 1
        else:
            direction.queue.append((arrived + direction.delay_s, packet))


def _parent_gone(stdin_fd: int) -> bool:
    """The parent closed our stdin (or died)."""
    try:
        return os.read(stdin_fd, 4096) == b""
    except BlockingIOError:
        return False


def _relay(specs: list[DelayLinkSpec]) -> int:
    parent = os.getppid()
    directions = _open_directions(specs)
    by_fd = {direction.src_fd: direction for direction in directions}
    stdin_fd = sys.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    watched = [stdin_fd, *by_fd]
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    next_parent_check = time.monotonic() + PARENT_CHECK_INTERVAL_S
    while True:
        now = time.monotonic()
        next_due = _release_due(directions, now, now + PARENT_CHECK_INTERVAL_S)
        if now >= next_parent_check:
            if os.getppid() != parent:
                return 0
            next_parent_check = now + PARENT_CHECK_INTERVAL_S
        # select() takes microseconds; epoll/poll would round the wait up to a
        # whole millisecond and add that to every hop's delay.
        readable, _, _ = select.select(watched, [], [], max(0.0, next_due - time.monotonic()))
        for fd in readable:
            if fd != stdin_fd:
                _take_in(by_fd[fd])
            elif _parent_gone(stdin_fd):
                return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    # The tag (lab name prefix) lets cleanup find relays of crashed runs.
    parser.add_argument("--tag", required=True)
    parser.parse_args(argv)
    config = json.loads(sys.stdin.readline())
    specs = [DelayLinkSpec(**link) for link in config["links"]]
    try:
        return _relay(specs)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"delaylink: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main())
