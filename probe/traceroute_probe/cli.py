"""``traceroute-probe``: trace targets, print a table or JSON, push metrics, write the
termination message. Exit codes (``contract.ExitCode``, docs/contracts.md section 1):
non-zero only when the probe itself failed; what it measured, reached or not, is in the
result. The highest wins when several apply:

0 measured (every target traced, whatever the outcome), 2 bad arguments, 3 no target
resolved, 4 no permission / a socket could not be opened (or an internal error),
5 push failed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from . import __version__
from .contract import (
    LOG_PREFIX,
    MAX_TARGETS,
    OUTCOME_ERROR_KINDS,
    PROG,
    TERMINATION_LOG_PATH,
    ExitCode,
    Flag,
    validate_label_name,
)
from .options import PROTOCOLS, TargetSpec, WaveOptions
from .result import RunResult, TargetError, TargetResult, termination_message
from .table import render
from .wave import run_wave

_HOST_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_int(low: int, high: int) -> type[int]:
    class Bounded(int):
        def __new__(cls, text: str) -> Bounded:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
            if not low <= value <= high:
                raise argparse.ArgumentTypeError(f"{value} not in {low}..{high}")
            return super().__new__(cls, value)

    return Bounded


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _pushgateway_url(text: str) -> str:
    """An http(s) URL with a host and a port in 1..65535, checked before any packet."""
    if not text or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in text):
        raise argparse.ArgumentTypeError(
            f"not a URL (empty, spaces, control or non-ASCII characters): {text!r}"
        )
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a URL: {text!r} ({err})") from None
    if parts.scheme not in ("http", "https"):
        raise argparse.ArgumentTypeError(f"{text!r}: the scheme must be http or https")
    host = parts.hostname
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r}: no host")
    if not (_HOST_NAME.match(host) or (":" in host and _is_literal(host))):
        raise argparse.ArgumentTypeError(f"{text!r}: {host!r} is not a host name or address")
    if port == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be in 1..65535")
    if parts.username is not None or parts.password is not None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: credentials in the URL; use {Flag.PUSHGATEWAY_USERNAME_FILE} and "
            f"{Flag.PUSHGATEWAY_PASSWORD_FILE}"
        )
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"{text!r}: a query or fragment has no meaning here")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Paris traceroute in one paced wave; unprivileged by default.",
        epilog="exit codes: 0 measured (reached or not: see the result), 2 bad arguments, "
        "3 no target resolved, 4 permission/socket/internal error, 5 push failed "
        "(the highest applies)",
    )
    p.add_argument("targets", nargs="+", metavar="TARGET", help="host name or address (1..64)")
    # The flags the operator sets are named by the contract (docs/contracts.md section 2).
    p.add_argument(Flag.PROTOCOL, choices=PROTOCOLS, default="icmp")
    p.add_argument(Flag.PORT, type=_positive_int(1, 65535), help="udp 33434, tcp 443")
    p.add_argument(Flag.IP_FAMILY, choices=("auto", "4", "6"), default="auto")
    p.add_argument(Flag.MAX_HOPS, type=_positive_int(1, 64), default=30)
    p.add_argument(Flag.FLOWS, type=_positive_int(1, 16), default=3)
    p.add_argument(Flag.PROBES_PER_HOP, type=_positive_int(1, 10), default=3)
    p.add_argument(Flag.TIMEOUT, type=_positive_float, default=10.0, help="hard deadline, seconds")
    p.add_argument(Flag.PPS, type=_positive_float, default=200.0, help="packets/s for the run")
    p.add_argument(
        Flag.START_DELAY_SECONDS,
        type=_positive_int(0, 50),
        default=0,
        help="wait this long before the run (the operator spreads a minute's runs)",
    )
    p.add_argument("--flow-seed", help="seed of the Paris flows (default: --probe, else target)")
    p.add_argument(
        "--socket",
        choices=("auto", "raw", "dgram"),
        default="auto",
        help="raw sockets (CAP_NET_RAW) or ping/datagram sockets (tcp: connect() probes, "
        "one in flight per flow); auto tries raw",
    )
    p.add_argument(Flag.NAMESPACE, default="default")
    p.add_argument(Flag.PROBE, help="probe name (Pushgateway grouping key)")
    p.add_argument(Flag.PUSHGATEWAY, metavar="URL", type=_pushgateway_url)
    p.add_argument(Flag.PUSHGATEWAY_CA, metavar="FILE")
    p.add_argument(Flag.PUSHGATEWAY_USERNAME_FILE, metavar="FILE")
    p.add_argument(Flag.PUSHGATEWAY_PASSWORD_FILE, metavar="FILE")
    p.add_argument(Flag.LABEL, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(Flag.EXPECTED_HOPS, action="append", default=[], metavar="N|TARGET=N")
    p.add_argument(Flag.TERMINATION_LOG, metavar="PATH")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def _read_secret(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip("\r\n")
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror}") from None


def _parse_labels(items: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--label expects KEY=VALUE, got {item!r}")
        problem = validate_label_name(key)
        if problem:
            raise UsageError(f"--label: {problem}")
        labels[key] = value
    return labels


def _parse_expected(items: Sequence[str], targets: Sequence[str]) -> dict[str, int]:
    default: int | None = None
    per_target: dict[str, int] = {}
    for item in items:
        name, sep, number = item.rpartition("=")
        try:
            value = int(number)
        except ValueError:
            raise UsageError(f"--expected-hops expects N or TARGET=N, got {item!r}") from None
        if not 1 <= value <= 255:
            raise UsageError(f"--expected-hops {value} not in 1..255")
        if not sep:
            default = value
        elif name not in targets:
            raise UsageError(f"--expected-hops names {name!r}, which is not a target")
        else:
            per_target[name] = value
    out = {t: default for t in targets if default is not None}
    out.update(per_target)
    return out


def resolve(name: str, family: str) -> tuple[str | None, int | None, TargetError | None]:
    """(address, family, error) for one target; literals never touch DNS."""
    wanted = {"auto": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}[family]
    try:
        literal = ipaddress.ip_address(name)
    except ValueError:
        literal = None
    if literal is not None:
        if family != "auto" and str(literal.version) != family:
            return None, None, TargetError("resolve", f"{name} is not an IPv{family} address")
        return str(literal), literal.version, None
    try:
        infos = socket.getaddrinfo(name, None, wanted, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as err:
        reason = err.strerror if isinstance(err, socket.gaierror) else str(err)
        return None, None, TargetError("resolve", f"cannot resolve {name}: {reason}")
    for af, _type, _proto, _canon, sockaddr in infos:
        if af in (socket.AF_INET, socket.AF_INET6):
            return str(sockaddr[0]), 4 if af == socket.AF_INET else 6, None
    return None, None, TargetError("resolve", f"cannot resolve {name}: no IPv4/IPv6 address")


def _resolve_all(
    targets: Sequence[str], family: str
) -> list[tuple[str | None, int | None, TargetError | None]]:
    """Literals at once; names concurrently (a slow resolver must not serialise 64 names)."""
    names = [t for t in targets if not _is_literal(t)]
    by_name: dict[str, tuple[str | None, int | None, TargetError | None]] = {}
    if names:
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 (only for names)

        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            by_name = dict(zip(names, pool.map(lambda n: resolve(n, family), names), strict=True))
    return [by_name[t] if t in by_name else resolve(t, family) for t in targets]


def _is_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _exit_code(results: Sequence[TargetResult], push_failed: bool) -> ExitCode:
    """Non-zero only for a failure of the probe (contracts.md section 1): a target not
    reached or refused by the kernel is a measurement; so is a name that does not resolve
    while another target resolved."""
    code = ExitCode.OK
    resolved = any(t.address is not None for t in results)
    for t in results:
        if t.error is None:
            continue
        if t.error.kind == "resolve":
            code = max(code, ExitCode.OK if resolved else ExitCode.RESOLVE)
        elif t.error.kind not in OUTCOME_ERROR_KINDS:
            code = max(code, ExitCode.PERMISSION)
    if push_failed:
        code = max(code, ExitCode.PUSH)
    return code


def _write_termination_log(path: str | None, text: str) -> str | None:
    """Write the message; the default path only if it exists (a kubelet creates it)."""
    target = path or TERMINATION_LOG_PATH
    if path is None and not os.path.exists(target):
        return None
    if not os.path.isdir(os.path.dirname(os.path.abspath(target)) or "."):
        return None
    try:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as err:
        return f"cannot write termination message to {target}: {err.strerror}"
    return None


def _stderr(line: str) -> None:
    print(f"{LOG_PREFIX}{line}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except UsageError as err:
        _stderr(f"error: {err}")
        return ExitCode.USAGE
    except KeyboardInterrupt:
        _stderr("interrupted")
        return 130
    except Exception as err:  # a bug outside the trace: one line, never a traceback
        _stderr(f"internal error: {type(err).__name__}: {err}")
        return ExitCode.PERMISSION


@dataclass(frozen=True)
class _Credentials:
    username: str | None
    password: str | None


def _checked_targets(args: argparse.Namespace) -> list[str]:
    targets: list[str] = list(dict.fromkeys(args.targets))
    if len(targets) > MAX_TARGETS:
        raise UsageError(f"at most {MAX_TARGETS} targets, got {len(targets)}")
    if args.protocol == "icmp" and args.port is not None:
        raise UsageError("--port applies to udp and tcp only")
    if args.pushgateway and not args.probe:
        raise UsageError("--pushgateway needs --probe (the grouping key)")
    return targets


def _credentials(args: argparse.Namespace) -> _Credentials:
    username = password = None
    if args.pushgateway_username_file:
        username = _read_secret(args.pushgateway_username_file, "username file")
    if args.pushgateway_password_file:
        password = _read_secret(args.pushgateway_password_file, "password file")
    if args.pushgateway_ca and not os.path.isfile(args.pushgateway_ca):
        raise UsageError(f"--pushgateway-ca {args.pushgateway_ca}: no such file")
    return _Credentials(username, password)


def _specs(
    args: argparse.Namespace, targets: Sequence[str], expected: dict[str, int]
) -> list[TargetSpec]:
    resolved = _resolve_all(targets, args.ip_family)
    seed_base = args.flow_seed or args.probe or ""
    return [
        TargetSpec(
            name=name,
            address=address,
            family=family,
            seed=f"{seed_base}/{name}",
            error=error,
            expected_hops=expected.get(name),
        )
        for name, (address, family, error) in zip(targets, resolved, strict=True)
    ]


def _options(args: argparse.Namespace) -> WaveOptions:
    return WaveOptions(
        protocol=args.protocol,
        port=args.port,  # None: WaveOptions.dst_port picks the protocol's default
        max_hops=args.max_hops,
        flows=args.flows,
        probes_per_hop=args.probes_per_hop,
        timeout=args.timeout,
        pps=args.pps,
        socket_mode=args.socket,
    )


def _trace(specs: Sequence[TargetSpec], options: WaveOptions) -> list[TargetResult]:
    try:
        return run_wave(specs, options)
    except Exception as err:  # a bug must still yield a result and a clear line
        return [
            TargetResult(
                target=s.name,
                address=s.address,
                family=s.family,
                protocol=options.protocol,
                error=s.error or TargetError("internal", f"{type(err).__name__}: {err}"),
                expected_hops=s.expected_hops,
            )
            for s in specs
        ]


def _push(
    run: RunResult, args: argparse.Namespace, labels: dict[str, str], credentials: _Credentials
) -> bool:
    """PUT the run's metrics; False (and the reason in ``run.errors``) if it failed."""
    from .metrics import (  # noqa: PLC0415 (prometheus_client costs startup time)
        PushError,
        PushSettings,
        build_registry,
        push,
    )

    settings = PushSettings(
        url=args.pushgateway,
        namespace=args.namespace,
        probe=args.probe,
        ca_file=args.pushgateway_ca,
        username=credentials.username,
        password=credentials.password,
    )
    try:
        push(build_registry(run, labels), settings)
    except PushError as err:
        run.errors.append(f"push: {err}")
        return False
    except Exception as err:  # a bug: the result is still printed and written
        run.errors.append(f"push: internal error: {type(err).__name__}: {err}")
        return False
    return True


def _report(args: argparse.Namespace, run: RunResult) -> None:
    """Termination message, stdout (table or JSON), stderr lines."""
    problem = _write_termination_log(args.termination_log, termination_message(run))
    if args.format == "json":
        docs = [t.to_json() for t in run.targets]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        print(render(run))
    for line in run.errors:
        _stderr(line)
    if problem:
        _stderr(problem)
    if args.format == "table" and not sys.stderr.isatty():
        print(_log_line(run), file=sys.stderr, flush=True)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    targets = _checked_targets(args)
    labels = _parse_labels(args.label)
    expected = _parse_expected(args.expected_hops, targets)
    credentials = _credentials(args)
    # after every check (a bad argument still exits 2 at once), before any packet
    time.sleep(args.start_delay_seconds)

    started = time.time()
    t0 = time.monotonic()
    results = _trace(_specs(args, targets, expected), _options(args))
    run = RunResult(started=started, duration_seconds=time.monotonic() - t0, targets=results)
    run.errors.extend(
        f"{t.target}: {t.error.kind}: {t.error.message}" for t in results if t.error is not None
    )
    push_failed = bool(args.pushgateway) and not _push(run, args, labels, credentials)
    run.exit_code = int(_exit_code(results, push_failed))
    run.duration_seconds = time.monotonic() - t0
    _report(args, run)
    return run.exit_code


def _log_line(run: RunResult) -> str:
    """One structured line for log pipelines (the table is for people)."""
    return json.dumps(
        {
            "ts": round(run.started, 3),
            "level": "info" if run.exit_code == ExitCode.OK else "error",
            "msg": "traceroute run finished",
            "code": run.exit_code,
            "duration_seconds": round(run.duration_seconds, 3),
            "targets": [
                {
                    "target": t.target,
                    "address": t.address,
                    "reached": t.reached,
                    "hops": t.hop_count,
                    "fingerprint": t.path_fingerprint,
                }
                for t in run.targets
            ],
            "errors": run.errors,
        },
        separators=(",", ":"),
    )


def entry() -> NoReturn:  # pragma: no cover (exits the interpreter)
    """The console script: :func:`main`, then exit at once. A run has nothing left to
    finalise once its output is flushed; the interpreter's teardown (modules, objects)
    would add about 5 ms to every probe start."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: what the default exit would also fail to write
        code = 120  # what Python exits with when it cannot flush stdout at exit
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
