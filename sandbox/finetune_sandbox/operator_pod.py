"""The operator as a pod of the sandbox, run from its image: the pod of manifests/operator/deployment.yaml.

The sandbox has no Deployment controller, so it makes the Deployment's pod itself, from the Deployment's own
template: the same user, read-only root, /tmp volume, args and env as on a cluster, with what only the sandbox
can give in place of what only a cluster has. No ServiceAccount token exists here: the API server is reached
through the sandbox's kubeconfig, from a Secret mounted like any other. Ports and addresses are the sandbox's
(every pod shares this machine's network), and the sandbox's fast status settings apply.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import yaml

KUBECONFIG_SECRET = "finetune-operator-kubeconfig"
KUBECONFIG_DIR = "/etc/finetune-operator/kubeconfig"
KUBECONFIG_KEY = "config"


def deployment_manifest(path) -> dict[str, Any]:
    (deployment,) = [doc for doc in yaml.safe_load_all(open(path)) if doc and doc.get("kind") == "Deployment"]
    return deployment


def operator_pod(
    deployment: dict[str, Any],
    *,
    image: str,
    name: str,
    settings: dict[str, str],
    args: list[str],
) -> dict[str, Any]:
    """The Deployment's pod, named `name`, running `image` with `args`; `settings` override its env by name."""
    template = copy.deepcopy(deployment["spec"]["template"])
    spec = template["spec"]
    spec.pop("serviceAccountName", None)
    spec["automountServiceAccountToken"] = False
    spec["restartPolicy"] = "Always"
    spec.setdefault("volumes", []).append({"name": "kubeconfig", "secret": {"secretName": KUBECONFIG_SECRET}})
    (container,) = spec["containers"]
    container["image"] = image
    container["args"] = list(args)
    # A probe of a port on this machine's shared network would collide between sandboxes: Kopf's liveness
    # endpoint is switched off (--liveness '') and so is its probe.
    container.pop("livenessProbe", None)
    wanted = {**settings, "KUBECONFIG": f"{KUBECONFIG_DIR}/{KUBECONFIG_KEY}"}
    env = [entry for entry in container.get("env") or [] if entry["name"] not in wanted]
    env += [{"name": key, "value": value} for key, value in wanted.items()]
    container["env"] = env
    container.setdefault("volumeMounts", []).append(
        {"name": "kubeconfig", "mountPath": KUBECONFIG_DIR, "readOnly": True}
    )
    namespace = deployment["metadata"]["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": template["metadata"]["labels"]},
        "spec": spec,
    }


def kubeconfig_secret(namespace: str, kubeconfig_text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": KUBECONFIG_SECRET, "namespace": namespace},
        "data": {KUBECONFIG_KEY: base64.b64encode(kubeconfig_text.encode()).decode()},
    }
