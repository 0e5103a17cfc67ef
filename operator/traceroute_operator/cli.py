"""``traceroute-operator``: run the operator, or render what it would create (offline)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

import yaml

from .config import ConfigError, OperatorConfig


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
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
