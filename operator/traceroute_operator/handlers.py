"""kopf registration: settings and handlers only; the work is in reconciler.py (per verb).

Handlers are sync functions: kopf runs them in its thread pool, so the blocking official
client never stalls the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from .config import OperatorConfig
from .errors import RetryableError
from .kube import Kube, new_api_client
from .metrics import OperatorMetrics
from .naming import (
    ANNOTATION_PREFIX,
    FINALIZER,
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_PROBE,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from .pending import job_start_problem, pod_start_problem
from .reconciler import ProbeReconciler

log = logging.getLogger("traceroute_operator")

CONFIG = OperatorConfig.from_env()
DELETE_RETRIES = 6

_state: dict[str, ProbeReconciler] = {}


def plain(value: Any) -> Any:
    """kopf's body views -> plain dicts/lists (the reconciler copies and compares them)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def reconciler() -> ProbeReconciler:
    if "reconciler" not in _state:
        raise kopf.TemporaryError("operator not started yet", delay=1)
    return _state["reconciler"]


def _call(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except RetryableError as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # kopf would post an Event for every handler log line; at 1000 probes only
    # warnings are worth an Event
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = CONFIG.workers
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = CONFIG.api_timeout_seconds
    # the apiserver filters: on.event(labels=) alone streams every pod of the cluster
    settings.watching.label_selectors["", "v1", "pods"] = POD_SELECTOR
    # discovery once at startup: no need to watch CustomResourceDefinitions (RBAC stays small)
    settings.scanning.disabled = True
    metrics = OperatorMetrics()
    if CONFIG.metrics_port:
        metrics.serve(CONFIG.metrics_port)
    kube = Kube(new_api_client(connection_pool=CONFIG.workers + 4), CONFIG.api_timeout_seconds)
    _state["reconciler"] = ProbeReconciler(kube, CONFIG, metrics)
    log.info(
        "traceroute-operator started: %s, probe image %s, Pushgateway %s",
        "all namespaces" if CONFIG.clusterwide else ",".join(CONFIG.watch_namespaces),
        CONFIG.probe_image,
        ",".join(CONFIG.own_pushgateway_urls),
    )


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile(body: kopf.Body, **_: Any) -> None:
    _call(reconciler().reconcile, plain(body))


if CONFIG.resync_seconds > 0:

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=CONFIG.resync_seconds,
        initial_delay=CONFIG.resync_seconds,
        idle=CONFIG.resync_seconds / 2,
    )
    def resync(body: kopf.Body, **_: Any) -> None:
        # re-apply children (a deleted or edited CronJob comes back); no-op requests otherwise
        _call(reconciler().reconcile, plain(body))


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=DELETE_RETRIES, backoff=10)
def cleanup(body: kopf.Body, retry: int, **_: Any) -> None:
    _call(reconciler().cleanup, plain(body), give_up=retry >= DELETE_RETRIES - 1)


POD_SELECTOR = f"{LABEL_PROBE},{LABEL_MANAGED_BY}={MANAGED_BY}"


def _finished(status: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") in ("Succeeded", "Failed")


@kopf.on.event(
    "",
    "v1",
    "pods",
    labels={LABEL_PROBE: kopf.PRESENT, LABEL_MANAGED_BY: MANAGED_BY},
    when=_finished,
)
def probe_pod(body: kopf.Body, **_: Any) -> None:
    try:
        reconciler().handle_pod(plain(body))
    except RetryableError as exc:
        # on.event handlers are not retried: the next event of this pod tries again
        log.warning("probe pod result not applied yet: %s", exc)


def _not_starting(body: kopf.Body, **_: Any) -> bool:
    return pod_start_problem(body) is not None


@kopf.on.event(
    "",
    "v1",
    "pods",
    labels={LABEL_PROBE: kopf.PRESENT, LABEL_MANAGED_BY: MANAGED_BY},
    when=_not_starting,
)
def pending_probe_pod(body: kopf.Body, **_: Any) -> None:
    try:
        reconciler().handle_pending_pod(plain(body))
    except RetryableError as exc:
        log.warning("pending probe pod not reported yet: %s", exc)


def _deadline_exceeded(body: kopf.Body, **_: Any) -> bool:
    return job_start_problem(body) is not None


@kopf.on.event(
    "batch",
    "v1",
    "jobs",
    labels={LABEL_PROBE: kopf.PRESENT, LABEL_MANAGED_BY: MANAGED_BY},
    when=_deadline_exceeded,
)
def probe_job(body: kopf.Body, **_: Any) -> None:
    try:
        reconciler().handle_job(plain(body))
    except RetryableError as exc:
        log.warning("failed probe Job not reported yet: %s", exc)


@kopf.on.event(
    "batch", "v1", "cronjobs", labels={LABEL_PROBE: kopf.PRESENT, LABEL_MANAGED_BY: MANAGED_BY}
)
def probe_cronjob(body: kopf.Body, type: str | None, **_: Any) -> None:
    # a CronJob deleted or edited by hand comes back now, not at the next resync
    reconciler().handle_cronjob(type, plain(body))


@kopf.on.probe(id="probes")
def managed_probes(**_: Any) -> int:
    """Liveness endpoint payload: how many probes this process manages."""
    return _state["reconciler"].managed_probes if "reconciler" in _state else 0
