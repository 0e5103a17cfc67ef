"""`podspec.ClusterObjects` read from the apiserver: what one pod's spec refers to."""

from __future__ import annotations

from typing import Any

from devcluster.kubetools import KubeError, KubeRest
from devcluster.podrunner.podspec import PodSpecError, decode_object_data


def token_request(
    pod_name: str, pod_uid: str, expiration_seconds: int, audience: str | None
) -> dict[str, Any]:
    """A TokenRequest bound to the pod (the token dies with it), as the kubelet sends it."""
    spec: dict[str, Any] = {
        "expirationSeconds": expiration_seconds,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid},
    }
    if audience:
        spec["audiences"] = [audience]
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


class ApiObjects:
    """Secrets, ConfigMaps and ServiceAccount tokens in the pod's namespace."""

    def __init__(self, api: KubeRest, namespace: str, pod_name: str, pod_uid: str) -> None:
        self.api = api
        self.namespace = namespace
        self.pod_name = pod_name
        self.pod_uid = pod_uid

    def object_data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        try:
            obj = self.api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        except KubeError as exc:
            if exc.status == 404:
                if optional:
                    return None
                raise PodSpecError(
                    "CreateContainerConfigError", f'{kind.lower()} "{name}" not found'
                ) from exc
            raise
        return decode_object_data(kind, obj)

    def service_account_token(
        self, service_account: str, expiration_seconds: int, audience: str | None
    ) -> str:
        response = self.api.post(
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{service_account}/token",
            token_request(self.pod_name, self.pod_uid, expiration_seconds, audience),
        )
        return str(response["status"]["token"])
