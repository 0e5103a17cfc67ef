"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries come from devcluster/env/build-control-plane.sh (built from their Go modules, cached
outside the checkout). Everything else is generated per instance in a runtime directory:
a CA, the apiserver's serving certificate, client certificates, the service-account signing
key. RBAC and PodSecurity admission are on; TokenRequest works, so a test can run the operator
with exactly a ServiceAccount's permissions (`service_account_kubeconfig`).

    with ControlPlane() as cp:
        core = kubernetes.client.CoreV1Api(cp.api_client())
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from devcluster.lab import CLUSTER_GATEWAY, ensure_cluster_bridge
from devcluster.runtime import CACHE, RuntimeDir, free_port, local_session

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.36.3")
BIN_DIR = CACHE / f"k8s-{K8S_VERSION}" / "bin"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# The CronJob -> Job -> Pod chain, Deployment -> ReplicaSet -> Pod (the chart's operator),
# garbage collection of owned objects, namespace deletion, the `default` ServiceAccount every
# namespace has on a real cluster (the ServiceAccount admission plugin rejects pods whose
# ServiceAccount is missing), the kube-root-ca.crt ConfigMap, Job TTL cleanup, and the
# aggregation of labelled ClusterRoles into the built-in admin/edit/view roles.
DEFAULT_CONTROLLERS = (
    "cronjob-controller",
    "job-controller",
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "ttl-after-finished-controller",
    "clusterrole-aggregation-controller",
)

NODE_CONTROLLERS = ("node-lifecycle-controller", "pod-garbage-collector-controller")

ADMIN_USER = "trop-admin"


def binaries_present() -> bool:
    return all(
        (BIN_DIR / b).is_file() for b in ("etcd", "kube-apiserver", "kube-controller-manager")
    )


# --- certificates ---------------------------------------------------------------------------


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A throw-away CA that issues the serving and client certificates of one control plane."""

    def __init__(self, common_name: str = "traceroute-operator-test-ca") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) signed by this CA; a client cert unless `server`."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _pem_cert(cert), _pem_key(key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    user: str,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """A self-contained kubeconfig (certificates embedded) for one user."""
    credentials: dict[str, str] = {}
    if client_cert_pem is not None and client_key_pem is not None:
        credentials["client-certificate-data"] = _b64(client_cert_pem)
        credentials["client-key-data"] = _b64(client_key_pem)
    if token is not None:
        credentials["token"] = token
    context: dict[str, str] = {"cluster": "trop", "user": user}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "trop",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return path


def api_client_from_kubeconfig(path: Path) -> k8s.ApiClient:
    api: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(path)
    )
    return api


# --- the control plane ----------------------------------------------------------------------


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback free ports.

    `detached=True` (used by `python -m devcluster up`) keeps the processes running after
    this Python process exits; otherwise they die with it even on SIGKILL.
    """

    def __init__(
        self,
        *,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        extra_apiserver_args: Sequence[str] = (),
        start_timeout: float = 90.0,
        detached: bool = False,
        serve_nodes: bool = False,
    ) -> None:
        """`serve_nodes`: real kubelets will join (devcluster.nodes). The apiserver then
        listens on the lab's CLUSTER_GATEWAY (kubelets and pods run in network namespaces,
        where the host's loopback is not theirs), authorizes kubelets as real clusters do
        (Node authorizer, NodeRestriction) and dials them by InternalIP with a client
        certificate, verifying their serving certificates against this CA."""
        # with kubelets: the not-ready taint they register with comes off once they are
        # Ready (node lifecycle), and the pods of a removed node go (pod GC)
        self.controllers = tuple(controllers) + (NODE_CONTROLLERS if serve_nodes else ())
        self.serve_nodes = serve_nodes
        self.bind_address = CLUSTER_GATEWAY if serve_nodes else "127.0.0.1"
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.start_timeout = start_timeout
        self.detached = detached
        self.rundir: RuntimeDir | None = None
        self.port = 0
        self.etcd_port = 0
        self.http = local_session()

    # paths ---------------------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        if self.rundir is None:
            raise ControlPlaneError("control plane not started")
        return self.rundir.path

    @property
    def url(self) -> str:
        return f"https://{self.bind_address}:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters)."""
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    # lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        if not binaries_present():
            raise ControlPlaneError(
                f"control-plane binaries missing in {BIN_DIR}: run `make env` "
                "(devcluster/env/build-control-plane.sh)"
            )
        if self.serve_nodes:
            ensure_cluster_bridge()
        # a port picked free can be taken before the server binds it: retry a bounded number
        last: Exception | None = None
        for _attempt in range(3):
            self.rundir = RuntimeDir(
                "controlplane", owner_pid=None if self.detached else os.getpid()
            )
            try:
                self._start_once()
                return self
            except ControlPlaneError as exc:
                last = exc
                self.rundir.remove(grace_seconds=2)
                self.rundir = None
                if "address already in use" not in str(exc):
                    raise
        raise ControlPlaneError(f"control plane did not start after 3 attempts: {last}")

    def stop(self) -> None:
        if self.rundir is not None:
            # controller-manager first, so it does not log a storm of errors while the
            # apiserver goes away; etcd last
            self.rundir.stop(["kube-controller-manager"], grace_seconds=5)
            self.rundir.stop(["kube-apiserver"], grace_seconds=10)
            self.rundir.remove(grace_seconds=5)
            self.rundir = None

    def _start_once(self) -> None:
        assert self.rundir is not None
        self._write_pki()
        self.etcd_port = free_port()
        peer_port = free_port()
        self.port = free_port(self.bind_address)
        self._write_kubeconfigs()
        die_with_owner = not self.detached

        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self.rundir.spawn(
            "etcd",
            [
                str(BIN_DIR / "etcd"),
                "--name=trop",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=trop={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            die_with_owner=die_with_owner,
        )
        self._wait_http(
            "etcd",
            etcd,
            lambda: self.http.get(f"{etcd_url}/health", timeout=2).json().get("health") == "true",
        )

        pki = self.workdir / "pki"
        apiserver = self.rundir.spawn(
            "kube-apiserver",
            [
                str(BIN_DIR / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.bind_address}",
                f"--advertise-address={self.bind_address}",
                f"--secure-port={self.port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                *self._authorization_args(),
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--profiling=false",
                # as on real clusters (kubeadm): privileged pods are refused by PodSecurity
                # admission per namespace, not by a global switch
                "--allow-privileged=true",
                # the `kubernetes` Service cannot have loopback endpoints; nothing here routes
                # service IPs anyway (no kube-proxy)
                "--endpoint-reconciler-type=none",
                *self.extra_apiserver_args,
            ],
            die_with_owner=die_with_owner,
        )
        self._wait_http("kube-apiserver", apiserver, self._apiserver_ready)

        kcm = self.rundir.spawn(
            "kube-controller-manager",
            [
                str(BIN_DIR / "kube-controller-manager"),
                f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                "--leader-elect=false",
                f"--controllers={','.join(self.controllers)}",
                "--secure-port=0",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--use-service-account-credentials=false",
            ],
            die_with_owner=die_with_owner,
        )
        if "serviceaccount-controller" in self.controllers:
            # the controller manager is working once it created the `default` ServiceAccount
            core = k8s.CoreV1Api(self.api_client())
            self._wait_http(
                "kube-controller-manager",
                kcm,
                lambda: core.read_namespaced_service_account("default", "default") is not None,
            )
        else:
            time.sleep(1.0)
            if kcm.poll() is not None:
                raise ControlPlaneError(self._died("kube-controller-manager", kcm.returncode))

    def _authorization_args(self) -> list[str]:
        # PodSecurity is in the default set; naming it keeps it on if defaults change
        plugins = ["PodSecurity", "ServiceAccount", "NamespaceLifecycle"]
        if not self.serve_nodes:
            return ["--authorization-mode=RBAC", f"--enable-admission-plugins={','.join(plugins)}"]
        pki = self.workdir / "pki"
        return [
            # kubelets as system:node:<name>: each reads and writes only its own objects
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={','.join([*plugins, 'NodeRestriction'])}",
            # a node's name is not in any DNS here: dial the address the kubelet reports
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
        ]

    def _wait_http(self, name: str, proc: Any, ready: Any) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(self._died(name, proc.returncode))
            try:
                if ready():
                    return
            except Exception:
                pass
            time.sleep(0.25)
        raise ControlPlaneError(
            f"{name} not ready within {self.start_timeout:.0f}s; log tail:\n"
            + self.workdir_log(name)
        )

    def _died(self, name: str, code: int) -> str:
        return f"{name} exited with {code}; log tail:\n{self.workdir_log(name)}"

    def workdir_log(self, name: str) -> str:
        return self.rundir.log_tail(name) if self.rundir else ""

    def _apiserver_ready(self) -> bool:
        pki = self.workdir / "pki"
        response = self.http.get(
            f"{self.url}/readyz",
            cert=(str(pki / "admin.crt"), str(pki / "admin.key")),
            verify=str(pki / "ca.crt"),
            timeout=3,
        )
        return response.status_code == 200

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(mode=0o700)
        ca = CertificateAuthority()
        ca_pem = _pem_cert(ca.cert)
        (pki / "ca.crt").write_bytes(ca_pem)
        (pki / "ca.key").write_bytes(_pem_key(ca.key))
        cert, key = ca.issue(
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=("127.0.0.1", "::1", "10.96.0.1", CLUSTER_GATEWAY),
            server=True,
        )
        (pki / "apiserver.crt").write_bytes(cert)
        (pki / "apiserver.key").write_bytes(key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(_pem_key(sa_key))
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        # kubeconfigs are written by _write_kubeconfigs once the port is chosen
        self._ca_pem = ca_pem
        self._users: dict[str, tuple[bytes, bytes]] = {}
        admin_cert, admin_key = ca.issue(ADMIN_USER, organizations=("system:masters",))
        (pki / "admin.crt").write_bytes(admin_cert)
        (pki / "admin.key").write_bytes(admin_key)
        # what the apiserver shows kubelets (logs, exec); the kubelets ask the apiserver
        # whether it may (webhook authorization): system:masters may
        client_cert, client_key = ca.issue(
            "kube-apiserver-kubelet-client", organizations=("system:masters",)
        )
        (pki / "kubelet-client.crt").write_bytes(client_cert)
        (pki / "kubelet-client.key").write_bytes(client_key)
        self._ca = ca
        self._users["admin"] = (admin_cert, admin_key)
        # its own identity (shows in audit/RBAC errors); system:masters so that every
        # controller can do its job without per-controller ServiceAccounts
        self._users["controller-manager"] = ca.issue(
            "system:kube-controller-manager", organizations=("system:masters",)
        )

    def _write_kubeconfigs(self) -> None:
        for user, (cert, key) in self._users.items():
            write_kubeconfig(
                self.workdir / f"{user}.kubeconfig",
                server=self.url,
                ca_pem=self._ca_pem,
                user=ADMIN_USER if user == "admin" else user,
                client_cert_pem=cert,
                client_key_pem=key,
            )

    def issue_certificate(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) from this control plane's CA (kubelet identities)."""
        return self._ca.issue(
            common_name,
            organizations=organizations,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            server=server,
        )

    def kubeconfig_for_certificate(self, user: str, cert: bytes, key: bytes, path: Path) -> Path:
        return write_kubeconfig(
            path,
            server=self.url,
            ca_pem=self.ca_file.read_bytes(),
            user=user,
            client_cert_pem=cert,
            client_key_pem=key,
        )

    # clients -------------------------------------------------------------------------------
    def api_client(self) -> k8s.ApiClient:
        """A new admin ApiClient (the caller closes it, or lets it be collected)."""
        return api_client_from_kubeconfig(self.kubeconfig)

    def version(self) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/version", verify=str(self.ca_file), timeout=5)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def kubeconfig_for_token(self, token: str, path: Path, *, namespace: str | None = None) -> Path:
        return write_kubeconfig(
            path,
            server=self.url,
            ca_pem=self.ca_file.read_bytes(),
            user="token-user",
            token=token,
            namespace=namespace,
        )

    def service_account_token(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600
    ) -> str:
        """A bound token for the ServiceAccount via the TokenRequest API."""
        with self.api_client() as api:
            request = k8s.AuthenticationV1TokenRequest(
                spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
            )
            response = k8s.CoreV1Api(api).create_namespaced_service_account_token(
                name, namespace, request
            )
            if response.status is None or not response.status.token:
                raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
            return str(response.status.token)

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        expiration: int = 3600,
        path: Path | None = None,
    ) -> Path:
        """A kubeconfig that acts with exactly that ServiceAccount's RBAC."""
        token = self.service_account_token(namespace, name, expiration_seconds=expiration)
        target = path or self.workdir / "sa" / f"{namespace}.{name}.kubeconfig"
        return self.kubeconfig_for_token(token, target, namespace=namespace)

    def ensure_service_account(self, namespace: str, name: str) -> None:
        with self.api_client() as api:
            core = k8s.CoreV1Api(api)
            try:
                core.create_namespaced_service_account(
                    namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
                )
            except k8s.ApiException as exc:
                if exc.status != 409:
                    raise

    def state(self) -> dict[str, Any]:
        """What `python -m devcluster status` prints and `down` needs."""
        return {
            "url": self.url,
            "kubeconfig": str(self.kubeconfig),
            "workdir": str(self.workdir),
            "version": K8S_VERSION,
        }
