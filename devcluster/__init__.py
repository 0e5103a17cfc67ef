"""A local Kubernetes cluster for development, demos, benchmarks and the tests.

Real components on one machine: a control plane built from its Go modules, the Debian
Pushgateway and Prometheus, a network lab of Linux routers in network namespaces, and a pod
runner. `python -m devcluster` starts and stops it by hand; `make demo` runs the demo.
Nothing here imports from tests/; the tests import from here.

Real nodes: `nodes` (containerd + kubelet per node inside a network-lab namespace, pods
on a lab router's link), `scheduler` (kube-scheduler), `registry` (a private TLS registry
with htpasswd auth), `images` (the product's images built from their Dockerfiles),
`nodeconfig` (the pure builders of every configuration file those write), `cluster`.
"""
