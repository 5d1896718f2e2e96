"""Pure builders: a FineTuneJob spec in, the manifest dicts of its children out.

No I/O and no Kopf here; the create handler adopts what these return (owner references) and sends it.
docs/pod-contract.md is the specification these functions implement.
"""

from .claims import pvc_claims
from .configmap import build_config_map, config_hash
from .job import build_job, spec_hash
from .promote import build_promote_job
from .secret import build_progress_secret
from .service import build_service

__all__ = [
    "build_config_map",
    "build_job",
    "build_progress_secret",
    "build_promote_job",
    "build_service",
    "config_hash",
    "pvc_claims",
    "spec_hash",
]
