"""Configuration files of one node (pure: same inputs, same text).

containerd's config, the kubelet's KubeletConfiguration, the CNI network of the node's pods,
containerd's trust of a private registry, and the nftables rules of the node's network
namespace. Only settings this machine or several nodes on one host need are set; everything
else keeps its upstream default (each setting says why it is there).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devcluster.controlplane import SERVICE_CLUSTER_IP_RANGE
from devcluster.lab import CLUSTER_IFACE, CLUSTER_SUBNET

# The pods' bridge inside the node's network namespace; the lab link to the router is one of
# its ports, so pods sit on that link's subnet with the router as their gateway.
POD_BRIDGE = "podbr"
# host-local hands out pod addresses from here to the end of the link's subnet
FIRST_POD_HOST = 16
SANDBOX_IMAGE = "localhost/pause:1"
NFT_TABLE = "trop_node"
KUBERNETES_SERVICE_IP = str(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)[1])


@dataclass(frozen=True)
class NodePaths:
    """Everything of one node lives under its runtime directory."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni-ipam"

    @property
    def certs_d(self) -> Path:
        return self.root / "certs.d"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"


@dataclass(frozen=True)
class PodNetwork:
    """A node's pods on the lab link between the node's namespace and its router."""

    network_name: str
    uplink: str  # the node namespace's end of the lab link (becomes a bridge port)
    node4: ipaddress.IPv4Interface  # the node's address on that link (moves to the bridge)
    router4: str
    node6: ipaddress.IPv6Interface
    router6: str

    def ranges(self) -> list[list[dict[str, str]]]:
        ranges = []
        for node, router in ((self.node4, self.router4), (self.node6, self.router6)):
            net = node.network
            ranges.append(
                [
                    {
                        "subnet": str(net),
                        "rangeStart": str(net[FIRST_POD_HOST]),
                        "rangeEnd": str(net[min(net.num_addresses - 2, 254)]),
                        "gateway": router,
                    }
                ]
            )
        return ranges

    def routes(self) -> list[dict[str, str]]:
        node = str(self.node4.ip)
        return [
            # the lab: the router forwards every lab subnet and nothing else (no default
            # route anywhere in the lab), so a packet for any other address dies there
            {"dst": "0.0.0.0/0", "gw": self.router4},
            {"dst": "::/0", "gw": self.router6},
            # the cluster's services, through the node (it NATs them onto the cluster network)
            {"dst": CLUSTER_SUBNET, "gw": node},
            {"dst": SERVICE_CLUSTER_IP_RANGE, "gw": node},
        ]


def cni_conflist(net: PodNetwork, paths: NodePaths) -> str:
    doc = {
        "cniVersion": "1.0.0",
        "name": net.network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": POD_BRIDGE,
                # the router is the gateway, the bridge only switches: no address, no NAT
                "isGateway": False,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    # several nodes on one host: the default /var/lib/cni/networks is shared
                    "dataDir": str(paths.cni_ipam_dir),
                    "ranges": net.ranges(),
                    "routes": net.routes(),
                },
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def containerd_config(paths: NodePaths, *, runc: str = "/usr/sbin/runc") -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            # one instance per node: own root, state and socket
            f'root = "{paths.containerd_root}"',
            f'state = "{paths.containerd_state}"',
            "[grpc]",
            f'  address = "{paths.containerd_socket}"',
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{paths.root / "containerd" / "opt"}"',
            f"[{cri}]",
            # runc cannot give the pause process oom_score_adj -998 here: without this every
            # sandbox fails with "can't get final child's PID from pipe: EOF"
            "  restrict_oom_score_adj = true",
            # nothing can be pulled from a public registry: a local pause image is imported
            f'  sandbox_image = "{SANDBOX_IMAGE}"',
            # pod network namespaces under the node's state, not the host's /run/netns
            "  netns_mounts_under_state_dir = true",
            f"  [{cri}.containerd]",
            '    snapshotter = "overlayfs"',
            '    default_runtime_name = "runc"',
            f"    [{cri}.containerd.runtimes.runc]",
            '      runtime_type = "io.containerd.runc.v2"',
            f"      [{cri}.containerd.runtimes.runc.options]",
            # no systemd on this machine; crun refuses its hybrid cgroups
            "        SystemdCgroup = false",
            f'        BinaryName = "{runc}"',
            # runc's container state under the node (default: the host's /run/containerd)
            f'        Root = "{paths.root / "runc"}"',
            f"  [{cri}.cni]",
            '    bin_dir = "/usr/lib/cni"',
            f'    conf_dir = "{paths.cni_conf_dir}"',
            f"  [{cri}.registry]",
            f'    config_path = "{paths.certs_d}"',
            "",
        ]
    )


def registry_hosts_toml(host: str, ca_file: Path) -> str:
    """containerd trusts `ca_file` for this one registry, nothing else."""
    return "\n".join(
        [
            f'server = "https://{host}"',
            "",
            f'[host."https://{host}"]',
            '  capabilities = ["pull", "resolve"]',
            f'  ca = "{ca_file}"',
            "",
        ]
    )


def kubelet_config(paths: NodePaths, *, node_ip: str, cgroup_root: str) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # this machine: v1 cgroup controllers (an empty unified hierarchy), no systemd
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # several kubelets on one host: each its own pod cgroup tree (kubepods below this)
        "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        # serve only on the cluster network, not on the address the pods' bridge has
        "address": node_ip,
        "tlsCertFile": str(paths.pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(paths.pki / "kubelet.key"),
        # the apiserver's client certificate (kubectl logs/exec) is from the cluster's CA;
        # anonymous off and webhook authn/authz are the defaults and stay
        "authentication": {"x509": {"clientCAFile": str(paths.pki / "ca.crt")}},
        # the default /var/log/pods would be shared by the nodes of this host
        "podLogsDir": str(paths.pod_logs),
        # pods must never learn the host's resolvers (their traffic stays in the lab)
        "resolvConf": "",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def node_nftables(
    net: PodNetwork, *, apiserver: tuple[str, int], services: Sequence[tuple[str, int]]
) -> str:
    """Rules of the node's namespace: the `kubernetes` Service for pods (no kube-proxy
    here), and pod traffic out of the lab only to the cluster's services."""
    api_addr, api_port = apiserver
    allowed = sorted({apiserver, *services})
    accept = [f"    ip daddr {addr} tcp dport {port} accept" for addr, port in allowed]
    return "\n".join(
        [
            f"table inet {NFT_TABLE} {{",
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            f"    ip daddr {KUBERNETES_SERVICE_IP} tcp dport 443 dnat ip to {api_addr}:{api_port}",
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    oifname "{CLUSTER_IFACE}" masquerade',
            "  }",
            "  chain forward {",
            "    type filter hook forward priority filter; policy drop;",
            "    ct state established,related accept",
            # bridged frames (pods and the router) pass this hook too (br_netfilter)
            f'    iifname "{POD_BRIDGE}" oifname "{POD_BRIDGE}" accept',
            f'    iifname "{POD_BRIDGE}" oifname "{CLUSTER_IFACE}" jump to_cluster',
            "  }",
            "  chain to_cluster {",
            *accept,
            "  }",
            "}",
            "",
        ]
    )
