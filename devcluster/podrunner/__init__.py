"""Stand-in for kube-scheduler + kubelet + container runtime, for the tests and the demo.

No container engine exists on this machine. The pod runner watches pods that no scheduler has
placed, binds them to its own (fake) Node and runs each container's command as a local
process the way a kubelet would:

- the image's entrypoint maps to the project's console scripts in the shared venv
  (`IMAGES`), `python` to the venv interpreter;
- the pod's user/group (`runAsUser`, `runAsGroup`, `supplementalGroups`, `fsGroup`), the
  container runtime's default capability set minus `drop` plus `add` (so a non-root user
  ends up with none, as on a real node), `no_new_privs` for `allowPrivilegeEscalation: false`,
  a read-only root for `readOnlyRootFilesystem`; all applied with `setpriv`;
- env (literal, fieldRef, secretKeyRef/configMapKeyRef, envFrom) with `$(VAR)` expansion;
- volumes (secret, configMap, emptyDir, projected incl. a bound ServiceAccount token,
  downwardAPI, hostPath) materialised per pod and bind-mounted in a private mount
  namespace, as is a per-container file over `terminationMessagePath`;
- network: the namespace named by `netns_for_pod(pod)` (the tests pass a lab host), else the
  host for `hostNetwork: true`, else a fresh empty namespace with only loopback. Pod sysctls
  (`net.*` only) are applied inside it;
- afterwards it writes the status a kubelet writes: phase Running then Succeeded/Failed,
  `containerStatuses[].state.terminated` (exitCode, reason, startedAt, finishedAt, message =
  the last 4096 bytes of the termination message file, or the log tail for
  `FallbackToLogsOnError`), `activeDeadlineSeconds` (DeadlineExceeded), restarts for
  `OnFailure`/`Always` (bounded), and graceful deletion (kill, then delete with grace 0).

Scheduling: only `nodeSelector` is checked against the runner's Node labels; a pod that
does not match stays Pending with `PodScheduled=False` reason `Unschedulable`, as
kube-scheduler reports it.

Not emulated: images (the host filesystem is the container's), resource limits, probes,
init/sidecar/ephemeral containers (such pods fail with reason UnsupportedByPodRunner).

Modules: `podspec` (spec -> launch plan, pure), `sandbox` (volumes, namespaces, processes),
`status` (the status documents and the patch call), `objects` (Secrets, ConfigMaps, tokens
from the apiserver), `task` (one pod's life), `runner` (the node: watch, bind, tasks).
"""

from devcluster.podrunner.podspec import (
    COMMAND_ALIASES,
    CONTAINER_PATH,
    DEFAULT_CAPABILITIES,
    DEFAULT_TERMINATION_MESSAGE_PATH,
    IMAGES,
    MAX_KILL_GRACE_SECONDS,
    MAX_RESTARTS,
    Image,
    Pod,
    PodSpecError,
    capability_set,
    expand_vars,
    image_name,
    setpriv_args,
)
from devcluster.podrunner.runner import NetnsForPod, PodRunner
from devcluster.podrunner.sandbox import HOST_NETNS, IMAGE_PATHS
from devcluster.podrunner.status import (
    FALLBACK_LOG_BYTES,
    FALLBACK_LOG_LINES,
    TERMINATION_MESSAGE_MAX_BYTES,
    ContainerResult,
    log_tail,
    now_rfc3339,
    read_termination_message,
)
from devcluster.podrunner.task import PodRun

__all__ = [
    "COMMAND_ALIASES",
    "CONTAINER_PATH",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_TERMINATION_MESSAGE_PATH",
    "FALLBACK_LOG_BYTES",
    "FALLBACK_LOG_LINES",
    "HOST_NETNS",
    "IMAGES",
    "IMAGE_PATHS",
    "MAX_KILL_GRACE_SECONDS",
    "MAX_RESTARTS",
    "TERMINATION_MESSAGE_MAX_BYTES",
    "ContainerResult",
    "Image",
    "NetnsForPod",
    "Pod",
    "PodRun",
    "PodRunner",
    "PodSpecError",
    "capability_set",
    "expand_vars",
    "image_name",
    "log_tail",
    "now_rfc3339",
    "read_termination_message",
    "setpriv_args",
]
