"""The FineTuneJob spec, typed (pydantic): what the operator accepts, and how it words a refusal.

`finetunejob.py` is the whole spec (`FineTuneJobSpec`, `parse_spec`, `SEARCH_PATHS`); its parts are
`sections.py` (one model per section), `hyperparameter_search.py` (the search section), `core_v1.py` (the core/v1
types passed through to the pods: tolerations, affinity, an env var's valueFrom), `schema.py` (the enums,
patterns and bounds the CRD repeats), `errors.py` (how a refused spec is worded) and `diff.py` (which fields an
update changed). What the rest of the operator imports is exported here.
"""

from .diff import changed_paths
from .errors import InvalidSpec
from .finetunejob import MAX_SPEC_VALUES, SEARCH_PATHS, FineTuneJobSpec, check_name, parse_spec

__all__ = [
    "MAX_SPEC_VALUES",
    "SEARCH_PATHS",
    "FineTuneJobSpec",
    "InvalidSpec",
    "changed_paths",
    "check_name",
    "parse_spec",
]
