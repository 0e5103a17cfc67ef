"""In-memory stand-ins for the apiserver and a Pushgateway, for the verbs' fast tests.

``FakeKube`` keeps objects by (plural, namespace, name), bumps resourceVersion on every
write and refuses a status write with a stale one (409) like the apiserver; failures can
be injected per (verb, plural). ``RecordingPushgateway`` is an HTTP server on loopback
that records every request and answers with a settable status. ``finished`` makes the
finished probe pod the kubelet would leave behind, with a v1 termination message.
"""

from __future__ import annotations

import copy
import http.server
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from traceroute_operator.kube import PLURALS, Kube, KubeError

Key = tuple[str, str | None, str]  # plural, namespace, name


class FakeKube(Kube):
    def __init__(self) -> None:  # no ApiClient: nothing leaves the process
        self.timeout = 1.0
        self.objects: dict[Key, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, str | None, str]] = []  # verb, plural, ns, name
        self.failures: dict[tuple[str, str], KubeError] = {}
        self.conflicts_left = 0  # replace_status answers 409 this many times first
        self._version = 0

    # -- test controls --------------------------------------------------------------------
    def fail(self, verb: str, plural: str, status: int, message: str = "injected") -> None:
        self.failures[(verb, plural)] = KubeError(status, message)

    def put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as if created by someone else (no call recorded)."""
        stored = copy.deepcopy(dict(obj))
        meta = stored.setdefault("metadata", {})
        self._version += 1
        meta["resourceVersion"] = str(self._version)
        self.objects[(PLURALS[stored["kind"]], meta.get("namespace"), meta["name"])] = stored
        return copy.deepcopy(stored)

    def stored(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, namespace, name))

    def calls_of(self, verb: str) -> list[tuple[str, str | None, str]]:
        return [(p, ns, n) for v, p, ns, n in self.calls if v == verb]

    # -- Kube ------------------------------------------------------------------------------
    def request(self, method: str, path: str, **_: Any) -> Any:
        raise AssertionError(f"unexpected raw request {method} {path}")

    def _record(self, verb: str, plural: str, namespace: str | None, name: str) -> None:
        self.calls.append((verb, plural, namespace, name))
        if (error := self.failures.get((verb, plural))) is not None:
            raise error

    def apply(self, obj: Mapping[str, Any], plural: str | None = None) -> dict[str, Any]:
        meta = obj["metadata"]
        self._record("apply", plural or PLURALS[obj["kind"]], meta.get("namespace"), meta["name"])
        return self.put(obj)

    def get(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        self._record("get", plural, namespace, name)
        found = self.objects.get((plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        self._record("list", plural, namespace, "")
        return [
            copy.deepcopy(o)
            for (p, ns, _), o in self.objects.items()
            if p == plural and (namespace is None or ns == namespace)
        ]

    def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> bool:
        self._record("delete", plural, namespace, name)
        current = self.objects.get((plural, namespace, name))
        if current is not None and current["metadata"].get("finalizers"):
            # as the apiserver: marked, gone once the last finalizer is removed
            current["metadata"].setdefault("deletionTimestamp", "2025-01-01T00:00:00Z")
            return True
        return self.objects.pop((plural, namespace, name), None) is not None

    def merge_patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Only what the verbs patch: metadata.finalizers, conditional on resourceVersion;
        an object left without finalizers while deleting is gone, as on the apiserver."""
        key = (plural, namespace, name)
        self._record("merge_patch", *key)
        current = self.objects.get(key)
        if current is None:
            raise KubeError(404, "not found")
        meta = patch.get("metadata") or {}
        version = meta.get("resourceVersion")
        if version is not None and version != current["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified")
        updated = copy.deepcopy(current)
        if "finalizers" in meta:
            updated["metadata"]["finalizers"] = list(meta["finalizers"] or [])
        if updated["metadata"].get("deletionTimestamp") and not updated["metadata"]["finalizers"]:
            del self.objects[key]
            return updated
        return self.put(updated)

    def replace_status(self, obj: Mapping[str, Any], plural: str) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (plural, meta.get("namespace"), meta["name"])
        self._record("replace_status", *key)
        current = self.objects.get(key)
        if current is None:
            raise KubeError(404, "not found")
        if self.conflicts_left > 0:
            self.conflicts_left -= 1
            self.put(current)  # someone else wrote meanwhile
            raise KubeError(409, "the object has been modified")
        if meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified")
        return self.put({**current, "status": copy.deepcopy(obj["status"])})

    def create(self, obj: Mapping[str, Any], plural: str | None = None) -> dict[str, Any]:
        meta = obj["metadata"]
        self._record("create", plural or PLURALS[obj["kind"]], meta.get("namespace"), "")
        self.events.append(copy.deepcopy(dict(obj)))
        return copy.deepcopy(dict(obj))


@dataclass
class RecordingPushgateway:
    url: str
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, body
    authorization: list[str | None] = field(default_factory=list)  # per request
    status: int = 200


@contextmanager
def recording_pushgateway() -> Iterator[RecordingPushgateway]:
    """A Pushgateway stand-in on 127.0.0.1 (an ephemeral port), stopped on exit."""
    state = RecordingPushgateway(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            state.requests.append((self.command, self.path, body))
            state.authorization.append(self.headers.get("Authorization"))
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_DELETE = do_POST = _answer  # noqa: N815 (http.server's naming)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Clock:
    """A settable clock for the verbs (status times, Event times, the shared-objects TTL)."""

    def __init__(self, now: float = 1_764_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def probe_body(
    name: str = "edge",
    namespace: str = "net",
    spec: Mapping[str, Any] | None = None,
    uid: str = "uid-edge",
    generation: int = 1,
) -> dict[str, Any]:
    return {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation},
        "spec": dict(spec) if spec is not None else {"targets": ["10.0.9.9"]},
    }


def sample(metrics: Any, name: str, **labels: str) -> float:
    """Current value of one operator metric series (0 when it does not exist yet)."""
    value = metrics.registry.get_sample_value(name, labels)
    return float(value) if value is not None else 0.0


def event_reasons(kube: FakeKube) -> list[str]:
    return [str(e["reason"]) for e in kube.events]


def refused_url() -> str:
    """A loopback URL nothing listens on (a port just released): connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


TS = 1_764_000_000.0  # the runs' start times count from here
TARGET = "10.0.9.9"
A1 = [["10.0.1.1"], ["10.1.2.1"], [TARGET]]


def message(ts: float, path: list[list[str]] = A1, reached: bool = True, code: int = 0) -> str:
    target = {"n": TARGET, "a": TARGET, "r": reached, "h": len(path), "p": path, "l": 0.0}
    return json.dumps({"v": 1, "ts": ts, "dur": 1.5, "code": code, "t": [target]})


def pod(
    uid: str,
    terminated: dict[str, Any],
    probe_uid: str = "uid-edge",
    phase: str = "Succeeded",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"trp-edge-{uid}",
            "namespace": "net",
            "uid": uid,
            "labels": {
                "traceroute.dev/probe": "edge",
                "traceroute.dev/probe-uid": probe_uid,
                "app.kubernetes.io/managed-by": "traceroute-operator",
                "batch.kubernetes.io/job-name": f"trp-edge-job-{uid}",
            },
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "probe", "state": {"terminated": terminated}}],
        },
    }


def finished(uid: str, ts: float, **kw: Any) -> dict[str, Any]:
    return pod(uid, {"exitCode": 0, "reason": "Completed", "message": message(ts, **kw)})
