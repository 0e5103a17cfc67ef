"""What the operator does for a TracerouteProbe, independent of kopf.

The kopf handlers (handlers.py) call into ``ProbeReconciler``; everything here is plain
synchronous code on the official client (it runs in kopf's thread pool). Status is written
read-modify-write with the object's resourceVersion (a conflict re-reads and retries), and a
per-probe lock serialises this process's writers (reconcile, pod results, resync).
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .children import SWITCH_OF_KIND, desired_objects, shared_objects
from .config import OperatorConfig
from .kube import PLURALS, Kube, KubeError
from .metrics import OperatorMetrics
from .naming import (
    API_VERSION,
    CONTAINER_NAME,
    KIND,
    LABEL_PROBE,
    LABEL_PROBE_UID,
    PLURAL,
    cronjob_name,
)
from .pushgateway import (
    PushgatewayEndpoint,
    PushgatewayError,
    delete_groups,
    push_verdict,
    verdict_exposition,
)
from .pushgateway_policy import effective_pushgateway
from .ref import ProbeRef
from .results import ResultError, RunReport, parse_termination_message
from .spec import ProbeSpec, SpecError
from .status import (
    ReconcileOutcome,
    RunRef,
    apply_run,
    condition,
    is_new_run,
    parse_iso,
    reconciled_status,
)

log = logging.getLogger("traceroute_operator")

EVENT_MESSAGE_LIMIT = 1024
STATUS_WRITE_ATTEMPTS = 8
SEEN_PODS_LIMIT = 20_000


class RetryableError(RuntimeError):
    """A temporary failure: kopf retries the handler after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 15.0) -> None:
        super().__init__(message)
        self.delay = delay


def _missing_kind(exc: KubeError) -> bool:
    # 404 for a kind the apiserver does not serve: "the server could not find the requested
    # resource" when the group exists, a plain "404 page not found" when the whole group is
    # missing (no prometheus-operator CRDs at all); a missing namespace says "namespaces ...
    # not found" instead
    return exc.not_found and (
        "could not find the requested resource" in exc.message or "page not found" in exc.message
    )


class ProbeReconciler:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.config = config
        self.metrics = metrics or OperatorMetrics()
        self.clock = clock
        self.instance = socket.gethostname()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._shared_lock = threading.Lock()
        self._shared_result: tuple[bool, str] = (True, "")
        self._shared_applied_at: float | None = None  # None: not applied (or released)
        self._seen_pods: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._seen_guard = threading.Lock()
        self._known: set[tuple[str, str]] = set()

    # -- locking -----------------------------------------------------------------------------
    @contextmanager
    def _probe_lock(self, namespace: str, name: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield

    # -- status ------------------------------------------------------------------------------
    def _write_status(
        self,
        namespace: str,
        name: str,
        mutate: Callable[[dict[str, Any]], dict[str, Any] | None],
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Read-modify-write of the status; ``mutate`` returns the new status or None (skip).

        Starts from ``body`` when given (kopf's fresh copy), re-reads after a conflict.
        """
        current: dict[str, Any] | None = dict(body) if body is not None else None
        for _attempt in range(STATUS_WRITE_ATTEMPTS):
            if current is None:
                current = self.kube.get(API_VERSION, PLURAL, namespace, name)
                if current is None:
                    return None
            new_status = mutate(current)
            if new_status is None:
                return None
            if new_status == current.get("status"):
                return current
            meta = current.get("metadata") or {}
            obj = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "status": new_status,
            }
            try:
                return self.kube.replace_status(obj, PLURAL)
            except KubeError as exc:
                if exc.not_found:
                    return None
                if not exc.conflict:
                    self.metrics.errors.labels("status").inc()
                    raise
            current = None  # someone else wrote: read again and redo the change
        self.metrics.errors.labels("status").inc()
        raise RetryableError(f"status of {namespace}/{name}: too many conflicting writers", 2.0)

    def _write_reconciled(
        self,
        body: Mapping[str, Any],
        generation: int | None,
        outcome: ReconcileOutcome,
        spec: ProbeSpec | None,
    ) -> dict[str, Any] | None:
        namespace, name, _ = probe_identity(body)
        return self._write_status(
            namespace,
            name,
            lambda cur: reconciled_status(
                cur.get("status"), generation, outcome, spec, self.clock()
            ),
            body,
        )

    # -- events ------------------------------------------------------------------------------
    def event(
        self, probe: Mapping[str, Any], reason: str, message: str, type_: str = "Warning"
    ) -> None:
        namespace, name, uid = probe_identity(probe)
        now = dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if len(message) > EVENT_MESSAGE_LIMIT:
            message = message[: EVENT_MESSAGE_LIMIT - 3] + "..."
        involved: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name,
            "namespace": namespace,
        }
        if uid:
            involved["uid"] = uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "traceroute-operator"},
            "reportingComponent": "traceroute.dev/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create(body, "events")
        except KubeError as exc:
            self.metrics.errors.labels("event").inc()
            log.warning("event %s on %s/%s not posted: %s", reason, namespace, name, exc)

    # -- reconcile ---------------------------------------------------------------------------
    def reconcile(self, body: Mapping[str, Any]) -> None:
        """Make the CronJob and monitoring objects match the spec; write kstatus status."""
        started = time.monotonic()
        namespace, name, _ = probe_identity(body)
        generation = (body.get("metadata") or {}).get("generation")
        with self._probe_lock(namespace, name):
            try:
                self._reconcile_locked(body, namespace, name, generation)
            finally:
                self.metrics.reconcile_duration.observe(time.monotonic() - started)

    def _reconcile_locked(
        self, body: Mapping[str, Any], namespace: str, name: str, generation: int | None
    ) -> None:
        self._known.add((namespace, name))
        self.metrics.probes.set(len(self._known))
        try:
            spec = ProbeSpec.from_dict(body.get("spec"))
            desired = desired_objects(ProbeRef.from_body(body), spec, self.config)
        except SpecError as exc:
            self.metrics.reconciles.labels("invalid").inc()
            self._stalled(
                body=body,
                namespace=namespace,
                name=name,
                generation=generation,
                message=str(exc),
                spec=None,
            )
            return
        try:
            self.kube.apply(desired.cronjob)
        except KubeError as exc:
            if exc.invalid:
                # the apiserver refused what the spec made (e.g. a bad affinity): only a
                # spec change helps, so do not retry in a loop
                self.metrics.reconciles.labels("invalid").inc()
                self.metrics.errors.labels("apply").inc()
                self._stalled(
                    body=body,
                    namespace=namespace,
                    name=name,
                    generation=generation,
                    message=f"CronJob rejected: {exc.message}",
                    spec=spec,
                )
                return
            self.metrics.reconciles.labels("retry").inc()
            self.metrics.errors.labels("apply").inc()
            message = f"applying CronJob failed: {exc}"
            self._write_reconciled(
                body, generation, ReconcileOutcome(cronjob_name(name), error=message), spec
            )
            raise RetryableError(message) from exc
        monitoring_ok, monitoring_message = self._apply_monitoring(desired.owned_monitoring)
        outcome = ReconcileOutcome(
            cronjob_name=desired.cronjob["metadata"]["name"],
            suspended=spec.suspend,
            monitoring_ok=monitoring_ok,
            monitoring_message=monitoring_message,
        )
        before = body.get("status") or {}
        written = self._write_reconciled(body, generation, outcome, spec)
        self.metrics.reconciles.labels("ok").inc()
        previous = condition(before, "MonitoringReady")
        if (
            written is not None
            and monitoring_ok is False
            and (previous is None or previous.get("message") != monitoring_message)
        ):
            self.event(body, "MonitoringNotGenerated", monitoring_message)

    def _stalled(
        self,
        *,
        body: Mapping[str, Any],
        namespace: str,
        name: str,
        generation: int | None,
        message: str,
        spec: ProbeSpec | None,
    ) -> None:
        log.warning("%s/%s: %s", namespace, name, message)
        outcome = ReconcileOutcome(cronjob_name(name), error=message, permanent=True)
        previous = condition(body.get("status") or {}, "Stalled")
        self._write_reconciled(body, generation, outcome, spec)
        if previous is None or previous.get("message") != message:
            self.event(body, "InvalidSpec", message)

    # -- monitoring objects -----------------------------------------------------------------
    def _apply_one(self, obj: Mapping[str, Any]) -> str | None:
        """Apply; None on success, else a message (never raises for API errors)."""
        kind = obj["kind"]
        meta = obj["metadata"]
        try:
            self.kube.apply(obj)
        except KubeError as exc:
            self.metrics.errors.labels("monitoring").inc()
            if _missing_kind(exc):
                return (
                    f"{kind} ({obj['apiVersion']}) is not served by this cluster: install the "
                    f"prometheus-operator CRDs or set {SWITCH_OF_KIND.get(kind, 'its switch')}"
                )
            return f"{kind} {meta.get('namespace')}/{meta['name']}: {exc.message}"
        return None

    def _apply_monitoring(self, owned: list[dict[str, Any]]) -> tuple[bool | None, str]:
        problems = [p for p in (self._apply_one(o) for o in owned) if p]
        shared_ok, shared_message = self.ensure_shared()
        if not owned and not shared_objects(self.config.monitoring):
            return None, ""
        if shared_message and not shared_ok:
            problems.append(shared_message)
        if problems:
            for problem in problems:
                log.warning("monitoring: %s", problem)
            return False, "; ".join(problems)
        return True, "monitoring objects are in place"

    def ensure_shared(self) -> tuple[bool, str]:
        """Apply the shared ServiceMonitor/dashboards once (again after each resync period).

        They depend only on the process's settings, so nothing but time can make them stale.
        """
        objects = shared_objects(self.config.monitoring)
        if not objects:
            return True, ""
        with self._shared_lock:
            applied_at = self._shared_applied_at
            period = max(self.config.resync_seconds, 60)
            if applied_at is not None and self.clock() - applied_at < period:
                return self._shared_result
            problems = [p for p in (self._apply_one(o) for o in objects) if p]
            self._shared_result = (not problems, "; ".join(problems))
            self._shared_applied_at = self.clock()
            return self._shared_result

    def _other_probes_remain(self, namespace: str, name: str) -> bool:
        for scope in self.config.watch_namespaces or (None,):
            for item in self.kube.list(API_VERSION, PLURAL, scope):
                meta = item.get("metadata") or {}
                if (meta.get("namespace"), meta.get("name")) == (namespace, name):
                    continue
                if not meta.get("deletionTimestamp"):
                    return True
        return False

    def release_shared_if_unused(self, namespace: str, name: str) -> None:
        with self._shared_lock:
            if self._other_probes_remain(namespace, name):
                return
            for obj in shared_objects(self.config.monitoring):
                meta = obj["metadata"]
                plural = PLURALS[obj["kind"]]
                try:
                    self.kube.delete(obj["apiVersion"], plural, meta["namespace"], meta["name"])
                except KubeError as exc:
                    if not _missing_kind(exc):
                        self.metrics.errors.labels("monitoring").inc()
                        log.warning("shared %s %s not deleted: %s", obj["kind"], meta["name"], exc)
            self._shared_applied_at = None
            log.info("last TracerouteProbe gone: shared monitoring objects removed")

    # -- Pushgateway -------------------------------------------------------------------------
    def _secret_value(self, namespace: str, secret: str, key: str) -> str:
        obj = self.kube.get("v1", "secrets", namespace, secret)
        if obj is None:
            raise PushgatewayError(f"Secret {namespace}/{secret} not found")
        raw = (obj.get("data") or {}).get(key)
        if raw is None:
            raise PushgatewayError(f"Secret {namespace}/{secret} has no key {key!r}")
        return base64.b64decode(raw).decode()

    def endpoint_for(self, namespace: str, spec: ProbeSpec | None) -> PushgatewayEndpoint:
        """How the operator reaches the probe's Pushgateway (its own files for the default)."""
        timeout = self.config.pushgateway_timeout_seconds
        if spec is None or not spec.pushgateway.url:
            cfg = self.config

            def read(path: str | None) -> str | None:
                if not path:
                    return None
                with open(path, encoding="utf-8") as f:
                    return f.read().strip() if path != cfg.pushgateway_ca_file else f.read()

            return PushgatewayEndpoint(
                url=cfg.default_pushgateway_url,
                ca_pem=read(cfg.pushgateway_ca_file),
                username=read(cfg.pushgateway_username_file),
                password=read(cfg.pushgateway_password_file),
                timeout=timeout,
            )
        chosen = effective_pushgateway(spec, self.config)
        url, ca, auth = chosen.url, chosen.tls_ca, chosen.basic_auth
        try:
            ca_pem = self._secret_value(namespace, ca.secret_name, ca.key) if ca else None
            username = password = None
            if auth is not None:
                username = self._secret_value(namespace, auth.secret_name, auth.username_key)
                password = self._secret_value(namespace, auth.secret_name, auth.password_key)
        except KubeError as exc:
            raise PushgatewayError(f"reading the Pushgateway secrets: {exc}") from exc
        return PushgatewayEndpoint(url, ca_pem, username, password, timeout)

    # -- delete ------------------------------------------------------------------------------
    def cleanup(self, body: Mapping[str, Any], give_up: bool = False) -> None:
        """Remove what owner references do not: Pushgateway groups, shared objects.

        Raises RetryableError when the Pushgateway cannot be reached, unless ``give_up``.
        """
        namespace, name, _ = probe_identity(body)
        try:
            spec: ProbeSpec | None = ProbeSpec.from_dict(body.get("spec"))
        except SpecError:
            spec = None
        with self._probe_lock(namespace, name):
            try:
                delete_groups(self.endpoint_for(namespace, spec), namespace, name)
            except (PushgatewayError, OSError) as exc:
                self.metrics.errors.labels("pushgateway").inc()
                if not give_up:
                    raise RetryableError(f"deleting Pushgateway groups: {exc}", 10.0) from exc
                self.event(
                    body,
                    "PushgatewayCleanupFailed",
                    f"Pushgateway groups of {namespace}/{name} left behind: {exc}",
                )
            # owned, so the garbage collector would remove it too; deleting it here makes
            # the runs stop now, not whenever the collector gets to it
            try:
                self.kube.delete("batch/v1", "cronjobs", namespace, cronjob_name(name))
            except KubeError as exc:
                log.warning("CronJob of %s/%s not deleted: %s", namespace, name, exc)
            self.release_shared_if_unused(namespace, name)
        self._known.discard((namespace, name))
        self.metrics.probes.set(len(self._known))
        with self._locks_guard:
            self._locks.pop((namespace, name), None)

    # -- results -----------------------------------------------------------------------------
    def _seen(self, pod_uid: str) -> bool:
        with self._seen_guard:
            return pod_uid in self._seen_pods

    def _mark_seen(self, pod_uid: str) -> None:
        with self._seen_guard:
            self._seen_pods[pod_uid] = None
            while len(self._seen_pods) > SEEN_PODS_LIMIT:
                self._seen_pods.popitem(last=False)

    def handle_pod(self, pod: Mapping[str, Any]) -> None:
        """Read a finished probe pod's result once and fold it into the probe's status."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        probe_name = labels.get(LABEL_PROBE)
        namespace = meta.get("namespace")
        pod_uid = meta.get("uid")
        pod_status = pod.get("status") or {}
        if not probe_name or not namespace or not pod_uid:
            return
        if pod_status.get("phase") not in ("Succeeded", "Failed"):
            return
        if self._seen(pod_uid):
            return
        terminated: Mapping[str, Any] = {}
        for container in pod_status.get("containerStatuses") or []:
            if container.get("name") == CONTAINER_NAME:
                terminated = (container.get("state") or {}).get("terminated") or {}
        exit_code = terminated.get("exitCode")
        result: RunReport | None = None
        failure: str | None = None
        try:
            result = parse_termination_message(terminated.get("message"))
            run_time = result.timestamp
        except ResultError as exc:
            reason = terminated.get("reason") or pod_status.get("reason") or "unknown"
            failure = f"run left no result ({exc}; exit code {exit_code}, reason {reason})"
            run_time = (
                parse_iso(terminated.get("startedAt"))
                or parse_iso(pod_status.get("startTime"))
                or parse_iso(meta.get("creationTimestamp"))
                or self.clock()
            )
        job_name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        ref = RunRef(job_name=job_name, pod_name=meta.get("name", ""), pod_uid=pod_uid)
        expected_uid = labels.get(LABEL_PROBE_UID)
        outcome: dict[str, Any] = {}

        def mutate(current: dict[str, Any]) -> dict[str, Any] | None:
            cur_meta = current.get("metadata") or {}
            if expected_uid and cur_meta.get("uid") != expected_uid:
                outcome["skip"] = "uid_mismatch"  # a pod of an earlier probe of that name
                return None
            if cur_meta.get("deletionTimestamp"):
                outcome["skip"] = "probe_gone"
                return None
            if not is_new_run(current.get("status"), ref, run_time):
                outcome["skip"] = "already_read"
                return None
            try:
                spec = ProbeSpec.from_dict(current.get("spec"))
            except SpecError:
                outcome["skip"] = "invalid_spec"
                return None
            update = apply_run(
                current.get("status"),
                spec,
                ref,
                run_time=run_time,
                exit_code=exit_code if isinstance(exit_code, int) else None,
                report=result,
                failure=failure,
                now=self.clock(),
            )
            outcome.update(update=update, spec=spec, body=current)
            return update.status

        with self._probe_lock(namespace, probe_name):
            written = self._write_status(namespace, probe_name, mutate)
        if written is None or "update" not in outcome:
            self.metrics.runs_skipped.labels(outcome.get("skip", "probe_gone")).inc()
            self._mark_seen(pod_uid)
            return
        self._mark_seen(pod_uid)
        self._after_run(written, outcome, result, failure)

    def _after_run(
        self,
        probe: dict[str, Any],
        outcome: Mapping[str, Any],
        result: RunReport | None,
        failure: str | None,
    ) -> None:
        namespace, name, _ = probe_identity(probe)
        update = outcome["update"]
        spec: ProbeSpec = outcome["spec"]
        if result is None:
            self.metrics.runs.labels("no_result").inc()
        elif any(not t.reached for t in result.targets):
            self.metrics.runs.labels("unreachable").inc()
        elif result.exit_code not in (0, 1):
            self.metrics.runs.labels("failed").inc()
        else:
            self.metrics.runs.labels("reached").inc()
        for change in update.changes:
            self.metrics.path_changes.labels(namespace, name).inc()
            log.warning(
                "%s/%s: path to %s changed: %s", namespace, name, change.target, change.describe()
            )
            self.event(probe, "PathChanged", f"target {change.target}: {change.describe()}")
        if update.newly_unreachable:
            self.event(
                probe,
                "TargetUnreachable",
                "not reached in the last run: " + ", ".join(update.newly_unreachable),
            )
        if update.new_errors:
            self.event(probe, "RunFailed" if failure else "RunErrors", "; ".join(update.new_errors))
        if result is not None:
            self.push_verdict(probe, spec)

    def push_verdict(self, probe: Mapping[str, Any], spec: ProbeSpec) -> None:
        namespace, name, _ = probe_identity(probe)
        targets = (probe.get("status") or {}).get("targets") or []
        try:
            endpoint = self.endpoint_for(namespace, spec)
            push_verdict(endpoint, namespace, name, verdict_exposition(targets, spec.metric_labels))
        except (PushgatewayError, OSError) as exc:
            # the next run pushes the counter again; the status keeps the truth meanwhile
            self.metrics.errors.labels("pushgateway").inc()
            log.warning("%s/%s: pushing the path-change verdict failed: %s", namespace, name, exc)


def probe_identity(probe: Mapping[str, Any]) -> tuple[str, str, str | None]:
    ref = ProbeRef.from_body(probe)
    return ref.namespace, ref.name, ref.uid
