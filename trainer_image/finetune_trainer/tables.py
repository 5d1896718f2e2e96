"""Load tabular data files (csv, json, jsonl, parquet) into pandas, with errors that name the file.

A URI may name one file or a folder; a folder's files of the configured format are concatenated in
name order.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from finetune_trainer.errors import InvalidData

TABLE_FORMATS = ("csv", "json", "jsonl", "parquet")
_EXTENSIONS = {"csv": (".csv",), "json": (".json",), "jsonl": (".jsonl", ".json"), "parquet": (".parquet", ".pq")}


def source_name(path: str) -> str:
    """The name of a data file or folder, as error messages show it."""
    return os.path.basename(path.rstrip("/")) or path


def table_files(path: str, fmt: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(_EXTENSIONS[fmt]))
        if not files:
            raise InvalidData(f"{path}: no {fmt} files ({', '.join(_EXTENSIONS[fmt])}) in this folder")
        return files
    raise InvalidData(f"{path} does not exist")


def _read_one(path: str, fmt: str) -> pd.DataFrame:
    try:
        if fmt == "csv":
            return pd.read_csv(path, keep_default_na=False)
        if fmt == "parquet":
            return pd.read_parquet(path)
        # json: either JSON lines or one array of objects; try the declared shape first.
        lines = fmt == "jsonl"
        try:
            return pd.read_json(path, lines=lines)
        except ValueError:
            return pd.read_json(path, lines=not lines)
    except pd.errors.EmptyDataError as exc:
        raise InvalidData(f"{os.path.basename(path)}: the file is empty") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidData(f"{os.path.basename(path)}: cannot be read as {fmt} ({exc})") from exc
    except Exception as exc:  # pyarrow raises its own error types for broken parquet
        raise InvalidData(f"{os.path.basename(path)}: cannot be read as {fmt} ({exc})") from exc


def load_table(path: str, fmt: str, required: list[str], *, name: str | None = None) -> pd.DataFrame:
    """Read `path` and check that it has rows and the `required` columns."""
    if fmt not in TABLE_FORMATS:
        raise InvalidData(f"dataset_format {fmt!r} is not a table format; use one of {', '.join(TABLE_FORMATS)}")
    files = table_files(path, fmt)
    frames = [_read_one(f, fmt) for f in files]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    label = name or source_name(path)
    if len(frame) == 0:
        raise InvalidData(f"{label}: the file has no data rows")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        raise InvalidData(
            f"{label}: missing column {', '.join(repr(m) for m in missing)} (columns present: {have}); "
            f"name the right one in spec.dataset.columns"
        )
    return frame


def check_no_blanks(frame: pd.DataFrame, column: str, name: str) -> None:
    """Reject empty cells in a required column, naming the first bad row (1-based, header excluded)."""
    values = frame[column]
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip()):
            raise InvalidData(f"{name} row {i + 1}: column {column!r} is empty")


def split_train_validation(n_rows: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of row indices: (train, validation). At least one row on each side."""
    if not 0.0 < fraction < 1.0:
        raise InvalidData(f"validation_split must be between 0 and 1 (exclusive); got {fraction}")
    if n_rows < 2:
        raise InvalidData(f"validation_split needs at least 2 training rows; got {n_rows}")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_val = min(n_rows - 1, max(1, int(round(n_rows * fraction))))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
