"""Names, labels and API coordinates shared by the operator's parts."""

from __future__ import annotations

import hashlib

GROUP = "traceroute.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TracerouteProbe"
PLURAL = "tracerouteprobes"

# Fixed from day one: renaming either strands every existing object (kopf would no longer
# recognise its own finalizer or progress annotations).
FINALIZER = "traceroute.dev/cleanup"
ANNOTATION_PREFIX = "traceroute.dev"

FIELD_MANAGER = "traceroute-operator"
MANAGED_BY = "traceroute-operator"

# Job name of the operator's path-change verdict group, beside the probe's own results
# (contract.PUSHGATEWAY_JOB).
OPERATOR_JOB = "traceroute-operator"

LABEL_PROBE = "traceroute.dev/probe"
LABEL_PROBE_UID = "traceroute.dev/probe-uid"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"

CONTAINER_NAME = "probe"

# Job names get an 11-character suffix from the CronJob controller; 52 keeps them valid.
CRONJOB_NAME_LIMIT = 52
CRONJOB_PREFIX = "trp-"


def bounded_name(prefix: str, name: str, limit: int) -> str:
    """``prefix + name``, or a truncated form with a stable hash suffix when too long."""
    full = prefix + name
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{full[: limit - 9].rstrip('-.')}-{digest}"


def cronjob_name(probe_name: str) -> str:
    """Deterministic CronJob name of a probe: the same probe always maps to the same object."""
    return bounded_name(CRONJOB_PREFIX, probe_name, CRONJOB_NAME_LIMIT)


def selector_labels(probe_name: str) -> dict[str, str]:
    """Labels that find everything the operator made for one probe (CronJob, Jobs, Pods)."""
    return {LABEL_PROBE: probe_name, LABEL_MANAGED_BY: MANAGED_BY}


def probe_labels(probe_name: str, probe_uid: str | None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "traceroute-probe",
        "app.kubernetes.io/instance": probe_name,
        "app.kubernetes.io/component": "probe",
        "app.kubernetes.io/part-of": "traceroute-operator",
        **selector_labels(probe_name),
    }
    if probe_uid:
        labels[LABEL_PROBE_UID] = probe_uid
    return labels
