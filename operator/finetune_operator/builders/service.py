"""The headless Service that gives every rank pod a stable DNS name (NAME-INDEX.NAME.NS.svc)."""

from __future__ import annotations

from typing import Any

from ..names import RENDEZVOUS_PORT, selector_labels, service_name
from ..spec import FineTuneJobSpec
from .meta import child_metadata

RENDEZVOUS_PORT_NAME = "rendezvous"


def build_service(spec: FineTuneJobSpec, name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(service_name(name), namespace, name),
        "spec": {
            "clusterIP": "None",
            # Ranks resolve rank 0 before any pod is Ready (trainers have no readiness probe), so
            # DNS records must exist for not-ready pods too.
            "publishNotReadyAddresses": True,
            "selector": selector_labels(name),
            "ports": [
                {
                    "name": RENDEZVOUS_PORT_NAME,
                    "port": RENDEZVOUS_PORT,
                    "targetPort": RENDEZVOUS_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }
