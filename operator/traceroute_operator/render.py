"""``traceroute-operator render``: what the operator would create, offline, for review.

The operator's settings come from the same place the installed operator reads them: the
environment of its Deployment. ``operator_environment`` takes that environment out of the
chart's rendered manifests (``helm template`` with the release's values), so the render
matches what the installed chart's operator creates (Pushgateway URL, dashboards
namespace, images, labels) instead of the built-in defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import ENV_PREFIX, OperatorConfig
from .manifests import Document, ManifestError
from .naming import API_VERSION, GROUP, KIND
from .ref import ProbeRef
from .spec import ProbeSpec, SpecError

OPERATOR_COMPONENT = "operator"  # the chart's app.kubernetes.io/component of the Deployment
OPERATOR_CONTAINER = "operator"


class RenderError(ValueError):
    """Documents that cannot be rendered: one line per document, each naming it."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


def operator_environment(documents: Sequence[Document]) -> dict[str, str]:
    """The TRACEROUTE_* environment of the operator Deployment among ``documents``.

    ``valueFrom: fieldRef metadata.namespace`` is the Deployment's namespace, as the kubelet
    resolves it; any other ``valueFrom`` cannot be known offline and is refused.
    """
    deployments = [d for d in documents if _is_operator_deployment(d.body)]
    if len(deployments) != 1:
        found = ", ".join(d.label for d in deployments) or "none"
        raise ManifestError(
            "expected one operator Deployment (label app.kubernetes.io/component="
            f"{OPERATOR_COMPONENT}) in the chart's manifests, found {found}"
        )
    (deployment,) = deployments
    body: Mapping[str, Any] = deployment.body
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    containers = (((body.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    container = next(
        (c for c in containers if isinstance(c, Mapping) and c.get("name") == OPERATOR_CONTAINER),
        None,
    )
    if container is None:
        raise ManifestError(f"{deployment.label}: no container named {OPERATOR_CONTAINER}")
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not name.startswith(ENV_PREFIX):
            continue
        if "value" in item:
            env[name] = "" if item["value"] is None else str(item["value"])
            continue
        field_ref = (item.get("valueFrom") or {}).get("fieldRef") or {}
        if field_ref.get("fieldPath") == "metadata.namespace" and namespace:
            env[name] = namespace
            continue
        raise ManifestError(f"{deployment.label}: env {name} has a value only a cluster knows")
    return env


def _is_operator_deployment(body: Any) -> bool:
    if not isinstance(body, Mapping) or body.get("kind") != "Deployment":
        return False
    labels = (body.get("metadata") or {}).get("labels") or {}
    return bool(labels.get("app.kubernetes.io/component") == OPERATOR_COMPONENT)


def render(
    documents: Sequence[Document], config: OperatorConfig, namespace: str
) -> list[dict[str, Any]]:
    """Every object the operator would create for the TracerouteProbes, in apply order.

    Other kinds are not the operator's and are passed over; a document that names this
    API group but cannot be rendered is a RenderError naming each such document. Without a
    uid (a file that never reached the apiserver) the owner references are left out: the
    apiserver assigns the uid the operator would reference.
    """
    # imported here: the builders pull in the dashboard library, `run` does not need it first
    from .children import shared_objects  # noqa: PLC0415

    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for doc in documents:
        if not _is_ours(doc.body):
            continue
        try:
            ref, probe_objects = _render_probe(doc.body, config, namespace)
        except (SpecError, ValueError) as exc:
            problems.append(f"{doc.label}: {exc}")
            continue
        key = (ref.namespace, ref.name)
        if key in seen:
            problems.append(f"{doc.label}: the same probe as {seen[key]}")
            continue
        seen[key] = doc.label
        objects.extend(probe_objects)
    if problems:
        raise RenderError(problems)
    if not seen:
        raise RenderError([f"no {KIND} in the input"])
    objects.extend(shared_objects(config.monitoring))
    return objects


def _is_ours(body: Any) -> bool:
    """A TracerouteProbe, or anything else claiming this API group (then it is refused)."""
    if not isinstance(body, Mapping):
        return True  # a scalar or a list where an object should be: refused, not skipped
    api_version = str(body.get("apiVersion") or "")
    return body.get("kind") == KIND or api_version.split("/", maxsplit=1)[0] == GROUP


def _render_probe(
    body: Any, config: OperatorConfig, namespace: str
) -> tuple[ProbeRef, list[dict[str, Any]]]:
    from .children import desired_objects  # noqa: PLC0415
    from .pushgateway_policy import effective_pushgateway  # noqa: PLC0415
    from .trust import check_image, check_pushgateway_url  # noqa: PLC0415

    if not isinstance(body, Mapping):
        raise SpecError(f"not an object but {type(body).__name__}")
    if body.get("kind") != KIND or body.get("apiVersion") != API_VERSION:
        raise SpecError(
            f"expected apiVersion {API_VERSION} kind {KIND}, got "
            f"{body.get('apiVersion')!r} {body.get('kind')!r}"
        )
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise SpecError("metadata: not an object")
    ref = ProbeRef.from_body({"metadata": {"namespace": namespace, **metadata}})
    spec = ProbeSpec.from_dict(body.get("spec"))
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
    return ref, [desired.cronjob, *desired.owned_monitoring]
