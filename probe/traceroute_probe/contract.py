"""The contract between the probe and the operator (docs/contracts.md).

Both sides import this module, so it imports nothing but the standard library: the
operator reads what the probe writes (termination message, exit code, Pushgateway group)
and sets the probe's flags. A change here is a change of the contract: the section
numbers below are those of docs/contracts.md.
"""

from __future__ import annotations

import enum
import re
from typing import Final


# --- 1. exit codes --------------------------------------------------------------------------
class ExitCode(enum.IntEnum):
    """The probe's exit code: non-zero only when the probe itself failed. What it measured
    (a target not reached, a name that does not resolve while others were traced, a
    target the kernel refused to send to) is in the message and the metrics, not here.
    When several apply, the highest wins."""

    OK = 0  # the run measured what it could: every outcome is in the message and the metrics
    USAGE = 2  # bad arguments: nothing was sent
    RESOLVE = 3  # no target resolved: nothing could be traced (the resolver is likely broken)
    PERMISSION = 4  # no permission / a socket could not be opened (also: an internal error)
    PUSH = 5  # the push to the Pushgateway failed


# 1 is retired: probes before exit code format 2 exited 1 when a target was not reached.
# Readers still take it for a run that measured what it was asked to.
LEGACY_UNREACHABLE: Final = 1

# A run that ended with one of these measured what it was asked to (reached or not);
# any other code means the probe failed.
MEASURED_EXIT_CODES: Final = frozenset({int(ExitCode.OK), LEGACY_UNREACHABLE})

# Per-target error kinds (TargetKey.ERROR) that are outcomes of the measurement, not
# failures of the probe: the kernel refused to send to the target (no route, a firewall,
# a bad scope), or the name did not resolve while another target was traced.
OUTCOME_ERROR_KINDS: Final = frozenset({"send", "resolve"})


# --- 2. the command line the operator sets ---------------------------------------------------
class Flag:
    """The probe's flags the operator sets on the probe container."""

    PROTOCOL: Final = "--protocol"
    PORT: Final = "--port"
    IP_FAMILY: Final = "--ip-family"
    MAX_HOPS: Final = "--max-hops"
    FLOWS: Final = "--flows"
    PROBES_PER_HOP: Final = "--probes-per-hop"
    TIMEOUT: Final = "--timeout"
    PPS: Final = "--pps"
    # seconds to wait before the first packet (0..50): spreads one minute's runs and pushes
    START_DELAY_SECONDS: Final = "--start-delay-seconds"
    NAMESPACE: Final = "--namespace"
    PROBE: Final = "--probe"
    TERMINATION_LOG: Final = "--termination-log"
    PUSHGATEWAY: Final = "--pushgateway"
    PUSHGATEWAY_CA: Final = "--pushgateway-ca"
    PUSHGATEWAY_USERNAME_FILE: Final = "--pushgateway-username-file"
    PUSHGATEWAY_PASSWORD_FILE: Final = "--pushgateway-password-file"
    LABEL: Final = "--label"
    EXPECTED_HOPS: Final = "--expected-hops"
    END_OF_OPTIONS: Final = "--"  # the targets follow; none can be read as a flag


MAX_TARGETS: Final = 64
TERMINATION_LOG_PATH: Final = "/dev/termination-log"
PROG: Final = "traceroute-probe"
# The probe starts every line it writes to stderr with this: a log tail (the kubelet's
# fallback message when the probe failed before writing its result) is picked by it.
LOG_PREFIX: Final = f"{PROG}: "


# --- 3. the termination message --------------------------------------------------------------
RESULT_FORMAT_VERSION: Final = 1
TERMINATION_MESSAGE_LIMIT: Final = 4096  # bytes; the kubelet keeps no more
MAX_ERRORS: Final = 8  # run-level error lines in the message
ERROR_TEXT_LIMIT: Final = 200  # characters per error text


class MessageKey:
    """Keys of the message's JSON object."""

    VERSION: Final = "v"  # RESULT_FORMAT_VERSION
    TIMESTAMP: Final = "ts"  # Unix time the run started, seconds
    DURATION: Final = "dur"  # wall time of the run, seconds
    EXIT_CODE: Final = "code"  # ExitCode
    ERRORS: Final = "err"  # list of error lines
    TARGETS: Final = "t"  # list of target objects (TargetKey)
    TRUNCATED: Final = "trunc"  # true when something was dropped to fit the limit


class TargetKey:
    """Keys of one target's object in ``MessageKey.TARGETS``."""

    NAME: Final = "n"
    ADDRESS: Final = "a"  # null when it did not resolve
    REACHED: Final = "r"
    HOPS: Final = "h"  # hop count: the longest flow's (hops_max); p covers TTL 1..h
    HOPS_MIN: Final = "hmin"  # the shortest flow's hop count; absent: equal to h
    PATH: Final = "p"  # per TTL 1..h the sorted responder set ([] silent); null if dropped
    LOSS: Final = "l"  # destination loss ratio
    RTT: Final = "rtt"  # mean destination RTT, ms; absent if dropped
    ERROR: Final = "e"  # "kind: message", only for a target that could not be traced
    REJECTED: Final = "x"  # replies that failed a check (forged, corrupt, stale); absent if 0


# --- 4. the Pushgateway group ----------------------------------------------------------------
PUSHGATEWAY_JOB: Final = "traceroute"
GROUPING_LABELS: Final = ("namespace", "probe")  # job/traceroute/namespace/<ns>/probe/<name>
# Labels the probe's series carry itself (grouping key, target, per-hop and edge labels):
# a --label (spec.metricLabels) may not reuse them.
RESERVED_LABELS: Final = frozenset(
    {
        "job",
        "instance",
        "namespace",
        "probe",
        "target",
        "flow",
        "flows",
        "ttl",
        "ip",
        "from",
        "to",
        "kind",
    }
)

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def validate_label_name(name: str) -> str | None:
    """Why ``name`` cannot be an extra label, or None if it can (here, not in metrics:
    the CLI checks ``--label`` on every run, prometheus_client only loads for a push)."""
    if not _LABEL_NAME.match(name) or name.startswith("__"):
        return f"invalid label name {name!r}"
    if name in RESERVED_LABELS:
        return f"label name {name!r} is reserved"
    return None
