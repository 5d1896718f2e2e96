"""The specs a search runs on (pure): the one it started with, and each trial's.

A search keeps the spec it started with in status.search.spec, so its trials stay comparable however the
object is edited later; only runPolicy.suspend follows the current spec. A trial's spec is that spec with
the trial's parameters applied and its output in the trial's own folder.
"""

from __future__ import annotations

import copy
from typing import Any

from ..spec import SEARCH_PATHS, FineTuneJobSpec, parse_spec
from .status import trial_output_uri


def trial_spec(spec_dict: dict[str, Any], parameters: dict[str, Any], output_uri: str, name: str) -> FineTuneJobSpec:
    """The spec a trial trains with: the job's, parameters applied, output in the trial's own folder."""
    body = SEARCH_PATHS.apply_parameters(spec_dict, parameters)
    body.pop("hyperparameterSearch", None)
    body["output"] = {**body["output"], "uri": trial_output_uri(output_uri, name)}
    return parse_spec(body)


def without_suspend(spec: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(spec)
    (body.get("runPolicy") or {}).pop("suspend", None)
    return body


def frozen_spec(ftj: dict[str, Any], spec: FineTuneJobSpec) -> tuple[dict[str, Any], FineTuneJobSpec]:
    """The spec dict and model the search runs on: the one it started with (status.search.spec), so trials
    stay comparable however the object is edited later, with the current runPolicy.suspend."""
    frozen = ((ftj.get("status") or {}).get("search") or {}).get("spec")
    if frozen is None:
        return copy.deepcopy(ftj["spec"]), spec
    body = copy.deepcopy(frozen)
    body.setdefault("runPolicy", {})["suspend"] = spec.run_policy.suspend
    return body, parse_spec(body)
