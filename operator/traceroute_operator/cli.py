"""``traceroute-operator``: run the operator, render what it would create (offline), or
take it away cleanly (``uninstall``, ``release``: see uninstall.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from .config import ConfigError, OperatorConfig
from .naming import API_VERSION, KIND
from .ref import ProbeRef
from .spec import ProbeSpec, SpecError


def render(
    documents: Sequence[Any], config: OperatorConfig, namespace: str
) -> list[dict[str, Any]]:
    """Every object the operator would create for these TracerouteProbes, in apply order.

    Without a uid (a file that never reached the apiserver) the owner references are left
    out: the apiserver assigns the uid the operator would reference.
    """
    # imported here: the builders pull in the dashboard library, `run` does not need it first
    from .children import desired_objects, shared_objects  # noqa: PLC0415
    from .pushgateway_policy import effective_pushgateway  # noqa: PLC0415
    from .trust import check_image, check_pushgateway_url  # noqa: PLC0415

    objects: list[dict[str, Any]] = []
    probes = 0
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        if doc.get("apiVersion") != API_VERSION:
            raise SpecError(f"apiVersion: expected {API_VERSION}, got {doc.get('apiVersion')!r}")
        ref = ProbeRef.from_body(
            {"metadata": {"namespace": namespace, **(doc.get("metadata") or {})}}
        )
        spec = ProbeSpec.from_dict(doc.get("spec"))
        pushgateway = effective_pushgateway(spec, config, ref)
        # the rules that need no cluster (Secrets are reviewed by the running operator)
        refusal = check_image(spec.image, config.probe_image, config.probe_image_prefixes)
        if refusal is None and not pushgateway.is_default:
            refusal = check_pushgateway_url(
                pushgateway.url, config.own_pushgateway_urls, config.allowed_pushgateway_urls
            )
        if refusal is not None:
            raise SpecError(str(refusal))
        desired = desired_objects(ref, spec, pushgateway, config)
        objects.append(desired.cronjob)
        objects.extend(desired.owned_monitoring)
        probes += 1
    if probes:
        objects.extend(shared_objects(config.monitoring))
    return objects


def _render_command(args: argparse.Namespace) -> int:
    try:
        config = OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"traceroute-operator: {exc}", file=sys.stderr)
        return 2
    try:
        if args.file == "-":
            documents = list(yaml.safe_load_all(sys.stdin))
        else:
            with open(args.file, encoding="utf-8") as f:
                documents = list(yaml.safe_load_all(f))
    except (OSError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())  # one line, also for YAML's multi-line errors
        print(f"traceroute-operator: cannot read {args.file}: {detail}", file=sys.stderr)
        return 2
    try:
        objects = render(documents, config, args.namespace)
    except (SpecError, ValueError) as exc:
        print(f"traceroute-operator: {args.file}: {exc}", file=sys.stderr)
        return 2
    if not objects:
        print(f"traceroute-operator: no {KIND} in {args.file}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False))
    return 0


def _run_command(args: argparse.Namespace) -> int:
    try:
        OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"traceroute-operator: {exc}", file=sys.stderr)
        return 2
    # imported here: importing the handlers registers them with kopf (only for `run`)
    from .main import run  # noqa: PLC0415

    run(verbose=args.verbose)
    return 0


def _kube(config: OperatorConfig) -> Any:
    # imported here: `render` works without cluster credentials or the client's config
    from .kube import Kube, new_api_client  # noqa: PLC0415

    return Kube(new_api_client(), config.api_timeout_seconds)


def _uninstall_command(args: argparse.Namespace) -> int:
    from .uninstall import uninstall  # noqa: PLC0415

    try:
        config = OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"traceroute-operator: {exc}", file=sys.stderr)
        return 2
    scope = ", ".join(config.watch_namespaces) or "every namespace"
    print(f"deleting every {KIND} in {scope}; waiting up to {args.timeout:.0f} s for the operator")
    remaining = uninstall(_kube(config), config.watch_namespaces, args.timeout)
    if not remaining:
        print(f"every {KIND} is gone: the operator cleaned up after each of them")
        return 0
    names = ", ".join(f"{r.namespace}/{r.name}" for r in remaining[:20])
    print(
        f"traceroute-operator: {len(remaining)} {KIND}(s) still there after "
        f"{args.timeout:.0f} s: {names}. Is the operator running? Without it, run "
        "`traceroute-operator release --namespace <ns>` (cleans up and removes the "
        "finalizer).",
        file=sys.stderr,
    )
    return 1


def _release_command(args: argparse.Namespace) -> int:
    from .reconciler import ProbeReconciler  # noqa: PLC0415
    from .uninstall import release  # noqa: PLC0415

    try:
        config = OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"traceroute-operator: {exc}", file=sys.stderr)
        return 2
    reconciler = ProbeReconciler(_kube(config), config)
    for namespace in args.namespace:
        released = release(reconciler, namespace)
        print(f"{namespace}: released {len(released)} {KIND}(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="traceroute-operator",
        description="Kubernetes operator for TracerouteProbe objects (traceroute.dev/v1alpha1).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run the operator (namespaces from TRACEROUTE_WATCH_NAMESPACES, empty = all)",
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_run_command)
    rend = commands.add_parser(
        "render",
        help="print every object the operator would create for the probes in a file (offline)",
    )
    rend.add_argument(
        "-f", "--file", required=True, help="YAML with TracerouteProbes ('-' = stdin)"
    )
    rend.add_argument(
        "-n", "--namespace", default="default", help="namespace of probes that name none"
    )
    rend.set_defaults(func=_render_command)
    uninst = commands.add_parser(
        "uninstall",
        help=f"delete every {KIND} the operator serves (TRACEROUTE_WATCH_NAMESPACES) and wait "
        "until the running operator has cleaned them up (the chart's pre-delete hook)",
    )
    uninst.add_argument(
        "--timeout", type=float, default=240.0, help="seconds to wait (default 240)"
    )
    uninst.set_defaults(func=_uninstall_command)
    rel = commands.add_parser(
        "release",
        help=f"without an operator: delete the {KIND}s of a namespace, clean up after them "
        "(Pushgateway groups, CronJob) and remove their finalizer",
    )
    rel.add_argument(
        "-n", "--namespace", action="append", required=True, help="namespace (repeatable)"
    )
    rel.set_defaults(func=_release_command)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
