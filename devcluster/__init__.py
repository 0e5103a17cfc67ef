"""A local Kubernetes cluster with real nodes for the tests and the demo.

`nodes`: containerd + kubelet per node inside a network-lab namespace, pods on a lab
router's link. `scheduler`: kube-scheduler. `registry`: a private TLS registry with htpasswd
auth. `images`: the product's images built from their Dockerfiles. `nodeconfig`: the pure
builders of every configuration file those write.
"""
