"""``traceroute-operator``: run the operator, render what it would create (offline), or
take it away cleanly (``uninstall``, ``release``: see uninstall.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from .config import ConfigError, OperatorConfig
from .naming import KIND


def _render_command(args: argparse.Namespace) -> int:
    # imported here: `run` needs none of it
    from .manifests import ManifestError, read  # noqa: PLC0415
    from .render import RenderError, operator_environment, render  # noqa: PLC0415

    stdin_text: list[str] = []

    def stdin() -> str:
        if stdin_text:
            raise ManifestError("'-' (stdin) can be read once")
        stdin_text.append(sys.stdin.read())
        return stdin_text[0]

    try:
        environ: Mapping[str, str] | None = None
        if args.operator_manifests is not None:
            environ = operator_environment(read([args.operator_manifests], stdin))
        config = OperatorConfig.from_env(environ)
        documents = read(args.file, stdin)
        objects = render(documents, config, args.namespace)
    except (ManifestError, ConfigError) as exc:
        print(f"traceroute-operator: {exc}", file=sys.stderr)
        return 2
    except RenderError as exc:
        for problem in exc.problems:
            print(f"traceroute-operator: {problem}", file=sys.stderr)
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
        help="print every object the operator would create for the probes (offline)",
    )
    rend.add_argument(
        "-f",
        "--file",
        action="append",
        required=True,
        help="YAML/JSON with TracerouteProbes: a file (several documents), a directory "
        "(its *.yaml, *.yml, *.json) or '-' for stdin; repeatable",
    )
    rend.add_argument(
        "--operator-manifests",
        metavar="FILE",
        help="the chart rendered with your values (`helm template ...`; '-' = stdin): the "
        "operator's settings are taken from its Deployment's TRACEROUTE_* env, as the "
        "installed operator reads them (default: this process's environment)",
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
