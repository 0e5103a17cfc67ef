"""A real Pushgateway and Prometheus (Debian packages) for the tests.

The Pushgateway listens on the lab's cluster gateway address (`devcluster.lab.CLUSTER_GATEWAY`,
a root-namespace bridge address) so that probe "pods" inside the lab can push to it, exactly
as pods push to a Service; the host reaches the same address. If the lab module is not
available it falls back to loopback. Prometheus listens on loopback, scrapes the Pushgateway
with `honor_labels: true` every second and evaluates rules every second.

    with Pushgateway() as pgw, Prometheus(pushgateway=pgw) as prom:
        pgw.push("job", {"instance": "x"}, "up_test 1\\n")
        prom.wait_for('up_test{job="job"}', lambda r: len(r) == 1, timeout=15)
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import requests
import yaml

from devcluster.lab import CLUSTER_GATEWAY, ensure_cluster_bridge
from devcluster.runtime import RuntimeDir, free_port, local_session

PUSHGATEWAY_BIN = "prometheus-pushgateway"
PROMETHEUS_BIN = "prometheus"
PROMTOOL_BIN = "promtool"

Vector = list[dict[str, Any]]


def _binary(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin")
    if not found:
        raise FileNotFoundError(f"{name} not installed (Debian package); run `make env`")
    return found


def promtool_path() -> str:
    """Path of Debian's promtool (`promtool test rules`, `promtool check rules`)."""
    return _binary(PROMTOOL_BIN)


def cluster_listen_host() -> str:
    """The address pods in the lab reach the host's services at (lab's CLUSTER_GATEWAY)."""
    ensure_cluster_bridge()
    return CLUSTER_GATEWAY


class _Service:
    kind = "service"

    def __init__(self, *, detached: bool) -> None:
        self.detached = detached
        self.rundir: RuntimeDir | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.http = local_session()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def workdir(self) -> Path:
        if self.rundir is None:
            raise RuntimeError(f"{self.kind} not started")
        return self.rundir.path

    def _wait_ready(self, proc: Any, timeout: float) -> None:
        assert self.rundir is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {proc.returncode}:\n{self.rundir.log_tail(self.kind)}"
                )
            try:
                if self.http.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(
            f"{self.kind} not ready within {timeout:.0f}s:\n{self.rundir.log_tail(self.kind)}"
        )

    def start(self) -> Self:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.rundir is not None:
            self.rundir.remove(grace_seconds=5)
            self.rundir = None
        self.http.close()

    def log(self) -> str:
        return self.rundir.log_tail(self.kind, 20000) if self.rundir else ""


class Pushgateway(_Service):
    """prometheus-pushgateway, in memory, admin API on (wipe between tests)."""

    kind = "pushgateway"

    def __init__(
        self,
        *,
        listen_host: str | None = None,
        detached: bool = False,
        args: Sequence[str] = (),
    ) -> None:
        super().__init__(detached=detached)
        self._listen_host = listen_host
        self._args = list(args)  # e.g. --push.disable-consistency-check, --persistence.file=

    def start(self, timeout: float = 30.0) -> Pushgateway:
        self.host = self._listen_host or cluster_listen_host()
        self.rundir = RuntimeDir("pushgateway", owner_pid=None if self.detached else os.getpid())
        self.port = free_port(self.host)
        proc = self.rundir.spawn(
            self.kind,
            [
                _binary(PUSHGATEWAY_BIN),
                f"--web.listen-address={self.host}:{self.port}",
                "--web.enable-admin-api",
                "--web.enable-lifecycle",
                "--log.level=warn",
                # Debian's default persistence file is shared by every gateway on the
                # machine: without this a gateway starts with the groups of the last one
                *(
                    []
                    if any(a.startswith("--persistence.file") for a in self._args)
                    else ["--persistence.file="]
                ),
                *self._args,
            ],
            die_with_owner=not self.detached,
        )
        self._wait_ready(proc, timeout)
        return self

    @property
    def pid(self) -> int:
        """The pushgateway process (for RSS and CPU readings)."""
        (record,) = [
            r for r in (self.rundir.records() if self.rundir else []) if r.name == self.kind
        ]
        return record.pid

    @staticmethod
    def group_path(job: str, grouping: Mapping[str, str]) -> str:
        parts = [f"/metrics/job/{urllib.parse.quote(job, safe='')}"]
        for key, value in grouping.items():
            parts.append(f"/{key}/{urllib.parse.quote(value, safe='')}")
        return "".join(parts)

    def push(
        self, job: str, grouping: Mapping[str, str], text: str, *, method: str = "PUT"
    ) -> None:
        """PUT (replace the group) or POST (replace same-named metrics) exposition text."""
        response = self.http.request(
            method, self.url + self.group_path(job, grouping), data=text.encode(), timeout=5
        )
        response.raise_for_status()

    def delete_group(self, job: str, grouping: Mapping[str, str]) -> None:
        self.http.delete(self.url + self.group_path(job, grouping), timeout=5).raise_for_status()

    def groups(self) -> list[dict[str, Any]]:
        """The Pushgateway's own view (/api/v1/metrics): one entry per group."""
        response = self.http.get(f"{self.url}/api/v1/metrics", timeout=5)
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def wipe(self) -> None:
        """Delete every group (admin API)."""
        self.http.put(f"{self.url}/api/v1/admin/wipe", timeout=5).raise_for_status()

    def metrics_text(self) -> str:
        response = self.http.get(f"{self.url}/metrics", timeout=5)
        response.raise_for_status()
        return response.text


@dataclass
class ScrapeTarget:
    job: str
    targets: list[str]
    honor_labels: bool = False
    metrics_path: str = "/metrics"
    scheme: str = "http"
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, interval: str) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "job_name": self.job,
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "honor_labels": self.honor_labels,
            "metrics_path": self.metrics_path,
            "scheme": self.scheme,
            "static_configs": [{"targets": self.targets}],
        }
        cfg.update(self.extra)
        return cfg


class PromQLError(RuntimeError):
    pass


class Prometheus(_Service):
    """prometheus with a temp TSDB, 1 s scrape/eval interval, lifecycle API for reloads."""

    kind = "prometheus"

    def __init__(
        self,
        *,
        pushgateway: Pushgateway | None = None,
        scrape_targets: Sequence[ScrapeTarget] = (),
        rule_files: Sequence[Path] = (),
        interval: str = "1s",
        detached: bool = False,
    ) -> None:
        super().__init__(detached=detached)
        self.pushgateway = pushgateway
        self.scrape_targets = list(scrape_targets)
        self.rule_files = [Path(p) for p in rule_files]
        self.interval = interval

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def config(self) -> dict[str, Any]:
        scrape = []
        if self.pushgateway is not None:
            scrape.append(
                ScrapeTarget(
                    "pushgateway",
                    [f"{self.pushgateway.host}:{self.pushgateway.port}"],
                    honor_labels=True,
                ).config(self.interval)
            )
        scrape += [t.config(self.interval) for t in self.scrape_targets]
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": scrape,
        }

    def _write_config(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        tmp.replace(self.config_path)

    def start(self, timeout: float = 60.0) -> Prometheus:
        self.rundir = RuntimeDir("prometheus", owner_pid=None if self.detached else os.getpid())
        self.port = free_port()
        self._write_config()
        proc = self.rundir.spawn(
            self.kind,
            [
                _binary(PROMETHEUS_BIN),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=2h",
                "--log.level=warn",
            ],
            die_with_owner=not self.detached,
        )
        self._wait_ready(proc, timeout)
        return self

    def reload(
        self,
        *,
        rule_files: Sequence[Path] | None = None,
        scrape_targets: Sequence[ScrapeTarget] | None = None,
    ) -> None:
        """Rewrite the config (optionally new rule files/targets) and POST /-/reload."""
        if rule_files is not None:
            self.rule_files = [Path(p) for p in rule_files]
        if scrape_targets is not None:
            self.scrape_targets = list(scrape_targets)
        self._write_config()
        response = self.http.post(f"{self.url}/-/reload", timeout=30)
        if response.status_code != 200:
            raise PromQLError(f"reload failed: {response.status_code} {response.text}")

    def _api(self, path: str, **params: str) -> Any:
        response = self.http.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> Vector:
        """Instant query; returns the result list ([{metric: {...}, value: [ts, "v"]}, ...])."""
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        data = self._api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: Vector = data["result"]
        return result

    def query_value(self, promql: str) -> float | None:
        """The single sample value of an instant query, None if the result is empty."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise PromQLError(f"{promql} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[Vector], bool] = bool,
        timeout: float = 30.0,
        interval: float = 0.5,
    ) -> Vector:
        """Re-run the query until predicate(result) holds; TimeoutError with the last result."""
        deadline = time.monotonic() + timeout
        last: Vector = []
        while True:
            last = self.query(promql)
            if predicate(last):
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{promql!r}: condition not met in {timeout:.0f}s; last={last}")
            time.sleep(interval)

    def alerts(self) -> list[dict[str, Any]]:
        data: dict[str, Any] = self._api("alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        data: dict[str, Any] = self._api("rules")
        groups: list[dict[str, Any]] = data["groups"]
        return groups

    def targets(self) -> list[dict[str, Any]]:
        data: dict[str, Any] = self._api("targets")
        active: list[dict[str, Any]] = data["activeTargets"]
        return active

    def wait_for_healthy_targets(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            targets = self.targets()
            if targets and all(t.get("health") == "up" for t in targets):
                return
            if time.monotonic() >= deadline:
                states = [
                    (t["labels"].get("job"), t.get("health"), t.get("lastError")) for t in targets
                ]
                raise TimeoutError(f"scrape targets not all up in {timeout:.0f}s: {states}")
            time.sleep(0.25)
