"""The contract between the probe and the operator (docs/contracts.md).

Both sides import this module, so it imports nothing but the standard library: the
operator reads what the probe writes (termination message, exit code, Pushgateway group)
and sets the probe's flags. A change here is a change of the contract: the section
numbers below are those of docs/contracts.md.
"""

from __future__ import annotations

import enum
from typing import Final


# --- 1. exit codes --------------------------------------------------------------------------
class ExitCode(enum.IntEnum):
    """The probe's exit code; when several apply, the highest wins."""

    OK = 0  # every target reached (and the push, if any, succeeded)
    UNREACHABLE = 1  # a target was not reached
    USAGE = 2  # bad arguments
    RESOLVE = 3  # a target did not resolve
    PERMISSION = 4  # no permission / a socket could not be opened (also: an internal error)
    PUSH = 5  # the push to the Pushgateway failed


# A run that ended with one of these measured what it was asked to (reached or not);
# any other code means the run failed.
MEASURED_EXIT_CODES: Final = frozenset({ExitCode.OK, ExitCode.UNREACHABLE})


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


# --- 4. the Pushgateway group ----------------------------------------------------------------
PUSHGATEWAY_JOB: Final = "traceroute"
GROUPING_LABELS: Final = ("namespace", "probe")  # job/traceroute/namespace/<ns>/probe/<name>
# Labels the probe's series carry itself (grouping key, target, per-hop and edge labels):
# a --label (spec.metricLabels) may not reuse them.
RESERVED_LABELS: Final = frozenset(
    {"job", "instance", "namespace", "probe", "target", "flow", "ttl", "ip", "from", "to", "kind"}
)
