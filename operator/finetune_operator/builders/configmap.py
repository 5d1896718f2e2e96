"""The ConfigMap holding the trainer's config.json, and the hash that ties pods to its content."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..names import CONFIG_FILE_KEY, config_map_name
from ..spec import FineTuneJobSpec
from .meta import child_metadata
from .trainer_config import render_trainer_config

CONFIG_HASH_LENGTH = 16


def build_config_map(spec: FineTuneJobSpec, name: str, namespace: str) -> dict[str, Any]:
    # Secrets never go here: the trainer config holds only Secret *references* via env, and
    # ConfigMaps are readable by anyone who can read the namespace.
    config = render_trainer_config(spec, name, namespace)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(config_map_name(name), namespace, name),
        "data": {CONFIG_FILE_KEY: json.dumps(config, indent=2, sort_keys=True)},
    }


def config_hash(config_map: dict[str, Any]) -> str:
    """A short, stable digest of the ConfigMap's data (key order does not matter)."""
    canonical = json.dumps(config_map.get("data", {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:CONFIG_HASH_LENGTH]
