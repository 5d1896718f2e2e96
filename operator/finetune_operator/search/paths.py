"""Parameter paths of a hyperparameter search: which spec fields a search may set, and setting them (pure).

A path without a dot names a field of `hyperparameters` (`learningRate`); a dotted path is relative to
`spec` (`method.lora.r`). Only scalar leaves of the FineTuneJobSpec model are searchable, outside the
sections that say where data comes from and goes, how pods run, and the search itself.

The model to walk is an argument (`SearchablePaths(root)`), not an import: the spec's validators check a
search's parameters with this module (spec.hyperparameter_search.check_parameters), so it must not import spec/. spec/finetunejob.py
binds it to FineTuneJobSpec once, as `spec.SEARCH_PATHS`, and the rest of the operator uses that.
"""

from __future__ import annotations

import copy
import difflib
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

ParameterKind = Literal["int", "float", "categorical"]

# What a trial changes is how the model trains, never where its data or output is, nor how pods are run.
NOT_SEARCHABLE = ("hyperparameterSearch", "output", "runPolicy", "scheduling", "secrets", "env", "image", "dataset")
_SHORT_FORM_SECTION = "hyperparameters"


class SearchablePaths:
    """The parameter paths of the spec model `root` (the model of a FineTuneJob's `spec`)."""

    def __init__(self, root: type[BaseModel]) -> None:
        self.root = root
        self._table: dict[str, ParameterKind] | None = None

    def resolve_path(self, path: str) -> str:
        """The full dotted camelCase path under `spec` that `path` names, e.g. learningRate ->
        hyperparameters.learningRate; ValueError saying why and naming close matches if it names no searchable
        field."""
        full = path if "." in path else f"{_SHORT_FORM_SECTION}.{path}"
        if full in self.searchable_paths():
            return full
        section = full.split(".", 1)[0]
        if section in NOT_SEARCHABLE:
            raise ValueError(
                f"{path!r} cannot be searched: fields under {section} are fixed for every trial "
                f"(searchable sections: {', '.join(self._searchable_sections())})"
            )
        known = self.accepted_keys()
        close = difflib.get_close_matches(path, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"e.g. {', '.join(known[:4])}"
        raise ValueError(
            f"{path!r} is not a searchable field: use a field of hyperparameters (learningRate) or a dotted path "
            f"under spec to a number, boolean or enum field (method.lora.r); {hint}"
        )

    def parameter_kind(self, path: str) -> ParameterKind:
        """int or float for number fields (which accept ranges), categorical for booleans, strings and enums."""
        return self.searchable_paths()[self.resolve_path(path)]

    def apply_parameters(self, spec: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """A deep copy of the camelCase `spec` with each parameter's value set at its resolved path, creating
        missing (or null) intermediate objects. Whole-number floats for int fields become ints, because a
        range's bounds arrive as floats and the spec's integers are strict. `hyperparameterSearch` is left as is."""
        out = copy.deepcopy(spec)
        for path, value in params.items():
            full = self.resolve_path(path)
            *parents, leaf = full.split(".")
            node = out
            for part in parents:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[leaf] = _as_kind(value, self.searchable_paths()[full])
        return out

    def accepted_keys(self) -> list[str]:
        """Every key `parameters` accepts: the full paths and the short form of each hyperparameters field."""
        full = list(self.searchable_paths())
        short = [path.split(".", 1)[1] for path in full if path.startswith(f"{_SHORT_FORM_SECTION}.")]
        return short + full

    def searchable_paths(self) -> dict[str, ParameterKind]:
        """Full dotted path -> kind, for every scalar leaf a search may set, in the model's field order
        (walked once, on first use)."""
        if self._table is None:
            table: dict[str, ParameterKind] = {}
            for alias, annotation in _fields(self.root):
                model = _model_of(annotation)
                if alias not in NOT_SEARCHABLE and model is not None:
                    _walk(model, alias, table)
            self._table = table
        return self._table

    def _searchable_sections(self) -> list[str]:
        return list(dict.fromkeys(path.split(".", 1)[0] for path in self.searchable_paths()))


def _walk(model: type[BaseModel], prefix: str, table: dict[str, ParameterKind]) -> None:
    for alias, annotation in _fields(model):
        path = f"{prefix}.{alias}"
        nested = _model_of(annotation)
        if nested is not None:
            _walk(nested, path, table)
            continue
        kind = _scalar_kind(annotation)
        if kind is not None:
            table[path] = kind


def _fields(model: type[BaseModel]) -> list[tuple[str, Any]]:
    return [(info.validation_alias or name, info.annotation) for name, info in model.model_fields.items()]


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    bare = _without_none(annotation)
    return bare if isinstance(bare, type) and issubclass(bare, BaseModel) else None


def _scalar_kind(annotation: Any) -> ParameterKind | None:
    bare = _without_none(annotation)
    if bare is bool or bare is str or get_origin(bare) is Literal:
        return "categorical"
    if bare is int:
        return "int"
    if bare is float:
        return "float"
    return None  # lists, dicts and unions of several types are not searchable


def _as_kind(value: Any, kind: ParameterKind) -> Any:
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
