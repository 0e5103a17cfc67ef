"""Deleting a probe: remove what owner references do not (Pushgateway groups, shared objects).

Runs under kopf's finalizer; a Pushgateway that cannot be reached is retried, and on the
last retry left behind with an Event so the probe's deletion is never blocked for good.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .context import OperatorContext
from .errors import RetryableError
from .kube import KubeError
from .naming import cronjob_name
from .pushgateway import PushgatewayError, PushgatewayRefusedError, delete_groups, operator_endpoint
from .pushgateway_policy import effective_pushgateway
from .ref import ProbeRef
from .shared import SharedMonitoring
from .spec import ProbeSpec, SpecError

log = logging.getLogger("traceroute_operator")


class Cleanup:
    def __init__(self, ctx: OperatorContext, shared: SharedMonitoring) -> None:
        self.ctx = ctx
        self.shared = shared

    def cleanup(self, body: Mapping[str, Any], give_up: bool = False) -> None:
        """Raises RetryableError when the Pushgateway cannot be reached, unless ``give_up``."""
        ref = ProbeRef.from_body(body)
        try:
            spec: ProbeSpec | None = ProbeSpec.from_dict(body.get("spec"))
        except SpecError:
            spec = None  # its groups can only be on the default Pushgateway
        with self.ctx.locks.hold(ref):
            # first: the drift watch must not bring back the CronJob deleted below
            self.ctx.cronjobs.forget(ref)
            self._delete_groups(ref, spec, give_up)
            # owned, so the garbage collector would remove it too; deleting it here makes
            # the runs stop now, not whenever the collector gets to it
            try:
                self.ctx.kube.delete("batch/v1", "cronjobs", ref.namespace, cronjob_name(ref.name))
            except KubeError as exc:
                log.warning("CronJob of %s/%s not deleted: %s", ref.namespace, ref.name, exc)
            self.shared.release_if_unused(ref)
        self.ctx.managed.discard(ref)
        self.ctx.locks.forget(ref)

    def _delete_groups(self, ref: ProbeRef, spec: ProbeSpec | None, give_up: bool) -> None:
        config = self.ctx.config
        try:
            pushgateway = effective_pushgateway(spec, config, ref)
            endpoint = operator_endpoint(self.ctx.kube, config, ref.namespace, pushgateway)
            delete_groups(endpoint, ref.namespace, ref.name)
        except PushgatewayRefusedError as exc:
            # never contact a URL the trust rules refuse, not even to clean up
            self.ctx.events.post(
                ref,
                "PushgatewayCleanupSkipped",
                f"Pushgateway groups of {ref.namespace}/{ref.name} not deleted: {exc}",
            )
        except (PushgatewayError, OSError) as exc:
            self.ctx.metrics.errors.labels("pushgateway").inc()
            if not give_up:
                raise RetryableError(f"deleting Pushgateway groups: {exc}", 10.0) from exc
            self.ctx.events.post(
                ref,
                "PushgatewayCleanupFailed",
                f"Pushgateway groups of {ref.namespace}/{ref.name} left behind: {exc}",
            )
