"""A forger for the hostile-ICMP lab tests: run as root in a router's namespace, it sniffs
the probe's IPv4 packets arriving on one interface (AF_PACKET) and answers each one with
forged ICMP Time Exceeded from its own address, in the variants asked for:

- ``destination``: the probe quoted exactly, but its destination rewritten (header
  checksum fixed): what a copy of id, sequence and payload towards another host looks like;
- ``outer-checksum``: an exact quote, the error's own ICMP checksum wrong;
- ``quoted-header-checksum``: an exact quote whose IPv4 header checksum is wrong;
- ``quoted-checksum``: the quoted ICMP echo's checksum field wrong;
- ``ports``: the quoted ICMP identifier or UDP/TCP source port + 1;
- ``token``: one byte of the quoted payload changed (the run token).

Bounded: it stops after ``--seconds`` or ``--max-probes`` sniffed probes, or on SIGTERM,
and then prints one JSON line: how many probes it saw and forgeries it sent per variant.

    python -m tests.probe.forger --iface IF --probe ADDR --other ADDR --variants a,b [--copies N]
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from types import FrameType

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
VARIANTS = (
    "destination",
    "outer-checksum",
    "quoted-header-checksum",
    "quoted-checksum",
    "ports",
    "token",
)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _set16(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("!H", value & 0xFFFF) + data[offset + 2 :]


def _fix_header(packet: bytes) -> bytes:
    ihl = (packet[0] & 0x0F) * 4
    header = _set16(packet[:ihl], 10, 0)
    return _set16(header, 10, checksum(header)) + packet[ihl:]


def is_probe(packet: bytes, probe: str) -> bool:
    """An echo request, UDP datagram or TCP SYN from the probe host."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or socket.inet_ntoa(packet[12:16]) != probe:
        return False
    ihl, protocol = (packet[0] & 0x0F) * 4, packet[9]
    if protocol == 1:
        return packet[ihl] == 8
    if protocol == 6:
        return len(packet) >= ihl + 14 and packet[ihl + 13] & 0x02 != 0
    return protocol == 17


def forged_quote(packet: bytes, variant: str, other: str) -> bytes:
    """What the forged error quotes: the probe as sniffed, changed as ``variant`` says."""
    ihl, protocol = (packet[0] & 0x0F) * 4, packet[9]
    if variant == "destination":
        return _fix_header(packet[:16] + socket.inet_aton(other) + packet[20:])
    if variant == "quoted-header-checksum":
        return _set16(packet, 10, struct.unpack_from("!H", packet, 10)[0] ^ 0x0101)
    if variant == "quoted-checksum" and protocol == 1:
        return _set16(packet, ihl + 2, struct.unpack_from("!H", packet, ihl + 2)[0] ^ 0x0101)
    if variant == "ports":
        offset = ihl + 4 if protocol == 1 else ihl  # ICMP identifier, UDP/TCP source port
        return _set16(packet, offset, struct.unpack_from("!H", packet, offset)[0] + 1)
    if variant == "token" and protocol in (1, 17):
        at = ihl + 8 + 3  # the third byte of the run token after the 2-byte magic
        return packet[:at] + bytes([packet[at] ^ 0xFF]) + packet[at + 1 :]
    return packet


def forged_error(quote: bytes, variant: str, source: str, probe: str) -> bytes:
    """A Time Exceeded from ``source`` to the probe host (the kernel fills the outer IPv4
    header checksum of an IP_HDRINCL packet)."""
    message = struct.pack("!BBHI", 11, 0, 0, 0) + quote[:548]
    good = checksum(message)
    message = _set16(message, 2, good ^ 0x0001 if variant == "outer-checksum" else good)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(message),
        0,
        0,
        64,
        1,
        0,
        socket.inet_aton(source),
        socket.inet_aton(probe),
    )
    return header + message


class _StopError(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _StopError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forger")
    parser.add_argument("--iface", required=True)
    parser.add_argument("--probe", required=True, help="the probe host's address")
    parser.add_argument("--source", required=True, help="the forger's own address")
    parser.add_argument("--other", required=True, help="the destination forged quotes name")
    parser.add_argument("--variants", required=True)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--max-probes", type=int, default=5000)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    signal.signal(signal.SIGTERM, _stop)
    seen, sent = 0, Counter[str]()
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        sniffer.bind((args.iface, ETH_P_IP))
        print("ready", flush=True)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and seen < args.max_probes:
            if not select.select([sniffer], [], [], 0.2)[0]:
                continue
            packet, address = sniffer.recvfrom(65535)
            if address[2] == PACKET_OUTGOING or not is_probe(packet, args.probe):
                continue
            seen += 1
            for variant in variants:
                error = forged_error(
                    forged_quote(packet, variant, args.other), variant, args.source, args.probe
                )
                for _ in range(args.copies):
                    sender.sendto(error, (args.probe, 0))
                    sent[variant] += 1
    except _StopError:
        pass
    finally:
        sniffer.close()
        sender.close()
        print(json.dumps({"probes": seen, "forged": dict(sent)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
