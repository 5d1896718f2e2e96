"""The sandbox's kubelet: runs the pods bound to its node as local processes (see node.py for the runtimes).

node.py             ProcessKubelet: watches pods, one PodWorker per pod bound to this node, disruption
pod_worker.py       PodWorker: one pod's lifecycle (volumes, pulls, init and main containers, restarts,
                    status, graceful termination)
runtime.py          PodRuntime: what differs between the runtimes, for one pod (missing images, launches)
process_runtime.py  a container as a process of this Python environment, paths rewritten to local folders
image_runtime/      a container from its image with buildah: plan, command line, working containers
env.py              the container's env, resolved as the kubelet does (pure)
volumes.py          where a pod's volumes live on this machine, their files, container paths rewritten
mount_backoff.py    the real kubelet's retry back-off for failed mounts (0.5 s doubling to 2 min 2 s) (pure)
events.py           Warning events on pods (FailedMount, Failed), repeats counted on one Event
status.py           pod status as the kubelet reports it (pure)
"""

from .node import ProcessKubelet

__all__ = ["ProcessKubelet"]
