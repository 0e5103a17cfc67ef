"""A thin, generic layer over the official ``kubernetes`` client.

The operator writes several kinds (CronJob, ConfigMap, ServiceMonitor, PrometheusRule,
Event, its own status) the same way: server-side apply with one field manager, so a
create-or-update is one idempotent request and a killed operator can never leave a
duplicate (names are deterministic). Plain REST paths through the client's ApiClient keep
authentication, TLS and token refresh with the official client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from .naming import FIELD_MANAGER

PLURALS = {
    "CronJob": "cronjobs",
    "Job": "jobs",
    "Pod": "pods",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Event": "events",
    "ServiceMonitor": "servicemonitors",
    "PrometheusRule": "prometheusrules",
    "TracerouteProbe": "tracerouteprobes",
}


class KubeError(RuntimeError):
    """A failed API request, with the HTTP status and the apiserver's message."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def invalid(self) -> bool:
        return self.status in (400, 422)

    @property
    def forbidden(self) -> bool:
        return self.status == 403


def new_api_client(connection_pool: int = 16) -> k8s.ApiClient:
    """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = connection_pool
    return k8s.ApiClient(configuration)


def resource_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = base
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    return path


class Kube:
    def __init__(self, api_client: k8s.ApiClient, timeout: float = 30.0) -> None:
        self.api = api_client
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        params = self.api.param_serialize(
            method,
            path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*params, _request_timeout=self.timeout)
        data = response.read()  # type: ignore[no-untyped-call]
        text = data.decode("utf-8", errors="replace") if data else ""
        if not 200 <= response.status <= 299:
            message, reason = text[:2000], ""
            try:
                doc = json.loads(text)
                message = str(doc.get("message") or message)
                reason = str(doc.get("reason") or "")
            except (ValueError, AttributeError):
                pass
            raise KubeError(response.status, message, reason)
        return json.loads(text) if text else None

    # generic verbs ----------------------------------------------------------------------
    def apply(self, obj: Mapping[str, Any], plural: str | None = None) -> dict[str, Any]:
        """Server-side apply ``obj`` (create or update, idempotent)."""
        meta = obj["metadata"]
        path = resource_path(
            obj["apiVersion"], plural or PLURALS[obj["kind"]], meta.get("namespace"), meta["name"]
        )
        result: dict[str, Any] = self.request(
            "PATCH",
            path,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        return result

    def get(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.request(
                "GET", resource_path(api_version, plural, namespace, name)
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        return result

    def list(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        for _page in range(10_000):
            doc = self.request(
                "GET",
                resource_path(api_version, plural, namespace),
                query={"labelSelector": label_selector, "limit": 500, "continue": token},
            )
            items.extend(doc.get("items") or [])
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                break
        return items

    def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        try:
            self.request(
                "DELETE",
                resource_path(api_version, plural, namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def merge_patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
    ) -> dict[str, Any]:
        """JSON merge patch; a ``metadata.resourceVersion`` in it makes it conditional."""
        result: dict[str, Any] = self.request(
            "PATCH",
            resource_path(api_version, plural, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    def replace_status(self, obj: Mapping[str, Any], plural: str) -> dict[str, Any]:
        """PUT the status subresource; ``metadata.resourceVersion`` makes it conditional."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], plural, meta.get("namespace"), meta["name"])
        result: dict[str, Any] = self.request("PUT", path + "/status", body=obj)
        return result

    def create(self, obj: Mapping[str, Any], plural: str | None = None) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(
            obj["apiVersion"], plural or PLURALS[obj["kind"]], meta.get("namespace")
        )
        result: dict[str, Any] = self.request("POST", path, body=obj)
        return result
