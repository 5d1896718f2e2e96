"""Class labels: infer the label list, and map a column of names or ids to ids (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from finetune_trainer.errors import InvalidData


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def label_text(value) -> str:
    """The name of a label cell: 1, 1.0 and "1" are the same label."""
    as_int = _as_int(value)
    return str(as_int) if as_int is not None else str(value).strip()


def infer_labels(values: Iterable) -> list[str]:
    """Sorted distinct labels of the training data; numerically when every label is an integer."""
    names = {label_text(v) for v in values}
    if all(_as_int(n) is not None for n in names):
        return [str(n) for n in sorted(int(n) for n in names)]
    return sorted(names)


def encode_labels(values: Sequence, labels: Sequence[str], *, source: str, column: str) -> list[int]:
    """Map each cell to its id: by name first, else as an id into `labels`.

    Raises InvalidData naming the file and the 1-based data row of the first unknown label.
    """
    index = {name: i for i, name in enumerate(labels)}
    ids = []
    for row, value in enumerate(values, start=1):
        name = label_text(value)
        if name in index:
            ids.append(index[name])
            continue
        as_int = _as_int(value)
        if as_int is not None and 0 <= as_int < len(labels):
            ids.append(as_int)
            continue
        raise InvalidData(f"{source} row {row}: {column} {value!r} is not one of {', '.join(labels)}")
    return ids
