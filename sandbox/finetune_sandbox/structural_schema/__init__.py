"""What a real API server does to a custom resource with a structural schema, in one pure function.

`apply_structural_schema` prunes unknown fields, applies defaults and validates (OpenAPI keywords and
CEL `x-kubernetes-validations`), in the order kube-apiserver does: prune (nulls of non-nullable fields
too), default (recursing into defaulted objects), then validate. The sandbox API server answers a
`SchemaViolation` with a 422 whose causes come from `.status_causes()`; the agreement tests use the same
function to hold the CRD and `spec.py` to one meaning.

The package: `apply.py` (the entry point, in that order), `pruning.py` (prune and default), `validation.py`
(OpenAPI keywords, combinators, list types, CEL rules; `SchemaViolation`), `cel.py` (values to CEL with the
schema's types, and evaluation), `formats.py` (date formats, Go's regular expressions), `values.py` (JSON
values as the schema sees them, and how messages show them).

Deliberate limits: CEL cost estimation is not modelled (no cost budget is enforced), `optionalOldSelf`
is not supported, date-time strings reach CEL as strings (not timestamps), and regular expressions run on
Python's engine with Go's meaning of `$` (end of text).
"""

from .apply import MAX_REQUEST_BYTES, apply_structural_schema, version_schema
from .validation import Cause, SchemaViolation

__all__ = ["MAX_REQUEST_BYTES", "Cause", "SchemaViolation", "apply_structural_schema", "version_schema"]
