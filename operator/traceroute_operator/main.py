"""Starts kopf with the handlers of handlers.py for the configured namespaces."""

from __future__ import annotations

import logging


def run(verbose: bool = False) -> None:
    # importing the handlers registers them (and reads the configuration): only on `run`
    import kopf  # noqa: PLC0415

    from . import handlers  # noqa: PLC0415

    config = handlers.CONFIG
    kopf.configure(verbose=verbose)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,  # one replica (Recreate): no peering objects needed
        clusterwide=config.clusterwide,
        namespaces=list(config.watch_namespaces),
        liveness_endpoint=config.liveness_endpoint,
    )
