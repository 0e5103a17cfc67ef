"""A private image registry: Debian's docker-registry (distribution 2.8) with TLS from a CA
of its own and htpasswd auth, on the lab's cluster network (where the nodes' containerd
pulls from). Nodes trust its CA for this registry only (`trust`, certs.d/hosts.toml)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from devcluster.controlplane import CertificateAuthority
from devcluster.lab import CLUSTER_GATEWAY, ensure_cluster_bridge
from devcluster.nodes import RegistryTrust
from devcluster.runtime import RuntimeDir, free_port, local_session, wait_until

REGISTRY_BINARY = "/usr/bin/docker-registry"
HTPASSWD = "/usr/bin/htpasswd"
USERNAME = "trop-pull"


class RegistryError(RuntimeError):
    pass


class Registry:
    def __init__(self, *, address: str = CLUSTER_GATEWAY, username: str = USERNAME) -> None:
        self.address = address
        self.username = username
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.rundir: RuntimeDir | None = None
        self.ca_pem = b""

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """host:port, as image references and containerd's certs.d name it."""
        return f"{self.address}:{self.port}"

    @property
    def workdir(self) -> Path:
        if self.rundir is None:
            raise RegistryError("registry not started")
        return self.rundir.path

    @property
    def ca_file(self) -> Path:
        """The CA alone in its directory: clients' --cert-dir reads every file there."""
        return self.workdir / "ca" / "ca.crt"

    @property
    def trust(self) -> RegistryTrust:
        return RegistryTrust(self.host, self.ca_pem)

    def start(self) -> Registry:
        if not Path(REGISTRY_BINARY).is_file():
            raise RegistryError(f"{REGISTRY_BINARY} missing: make env (apt docker-registry)")
        if self.address == CLUSTER_GATEWAY:
            ensure_cluster_bridge()
        self.rundir = RuntimeDir("registry", owner_pid=os.getpid())
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.rundir is not None:
            self.rundir.remove(grace_seconds=3)
            self.rundir = None

    def _start(self) -> None:
        assert self.rundir is not None
        certs = self.workdir / "certs"
        certs.mkdir(mode=0o700)
        ca = CertificateAuthority("traceroute-operator-registry-ca")
        cert, key = ca.issue("registry", ip_addresses=(self.address,), server=True)
        self.ca_pem = ca.cert.public_bytes(Encoding.PEM)
        self.ca_file.parent.mkdir()
        self.ca_file.write_bytes(self.ca_pem)
        (certs / "registry.crt").write_bytes(cert)
        (certs / "registry.key").write_bytes(key)
        htpasswd = self.workdir / "htpasswd"
        subprocess.run(
            [HTPASSWD, "-B", "-b", "-c", str(htpasswd), self.username, self.password],
            capture_output=True,
            timeout=30,
            check=True,
        )
        self.port = free_port(self.address)
        config = self.workdir / "config.yml"
        config.write_text(yaml.safe_dump(self._config(certs, htpasswd), sort_keys=False))
        proc = self.rundir.spawn("docker-registry", [REGISTRY_BINARY, "serve", str(config)])
        session = local_session()

        def answering() -> bool:
            if proc.poll() is not None:
                raise RegistryError(f"registry exited: {self.log_tail()}")
            # unauthenticated: 401 means TLS and auth are both up
            response = session.get(f"https://{self.host}/v2/", verify=str(self.ca_file), timeout=2)
            return response.status_code == 401

        wait_until(answering, timeout=30, what="registry")

    def _config(self, certs: Path, htpasswd: Path) -> dict[str, Any]:
        return {
            "version": 0.1,
            "log": {"level": "info", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "data")},
                "delete": {"enabled": True},
            },
            "http": {
                "addr": self.host,
                "secret": secrets.token_hex(16),
                "tls": {
                    "certificate": str(certs / "registry.crt"),
                    "key": str(certs / "registry.key"),
                },
            },
            "auth": {"htpasswd": {"realm": "traceroute-operator", "path": str(htpasswd)}},
        }

    def log_tail(self) -> str:
        return self.rundir.log_tail("docker-registry") if self.rundir else ""

    def docker_config_json(self) -> str:
        """The `.dockerconfigjson` of a pull Secret for this registry."""
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return json.dumps(
            {
                "auths": {
                    self.host: {"username": self.username, "password": self.password, "auth": auth}
                }
            }
        )

    def pull_secret(self, name: str) -> dict[str, Any]:
        data = base64.b64encode(self.docker_config_json().encode()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": data},
        }
