"""Image and audio inputs: imagefolder/audiofolder layouts, path tables, decoding and resampling.

Layouts follow the Hugging Face `imagefolder`/`audiofolder` conventions: ROOT/LABEL/file, or files
listed in ROOT/metadata.csv (or .jsonl) with a `file_name` column. Tables (csv/json/parquet) name
files in a column; relative paths are relative to the table's folder.
"""

from __future__ import annotations

import os
from math import gcd

import numpy as np
import pandas as pd
import soundfile
from PIL import Image, UnidentifiedImageError

from finetune_trainer.errors import InvalidData
from finetune_trainer.tables import load_table, source_name

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def folder_table(root: str, extensions: tuple[str, ...], path_column: str, label_column: str) -> pd.DataFrame:
    """A table of (path, label or metadata columns) for a folder dataset."""
    if not os.path.isdir(root):
        raise InvalidData(f"{root}: expected a folder (ROOT/LABEL/files or ROOT/metadata.csv)")
    for meta in ("metadata.csv", "metadata.jsonl"):
        meta_path = os.path.join(root, meta)
        if os.path.isfile(meta_path):
            frame = load_table(meta_path, "csv" if meta.endswith(".csv") else "jsonl", ["file_name"], name=meta)
            frame[path_column] = [os.path.join(root, str(f)) for f in frame["file_name"]]
            return frame
    rows = []
    for label in sorted(os.listdir(root)):
        folder = os.path.join(root, label)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.lower().endswith(extensions):
                    rows.append({path_column: os.path.join(folder, name), label_column: label})
    if not rows:
        raise InvalidData(f"{root}: no files ({', '.join(extensions)}) in ROOT/LABEL/ subfolders and no metadata.csv")
    return pd.DataFrame(rows)


def media_table(
    path, data_args, *, folder_format: str, extensions, path_column: str, label_column: str, required: list[str]
):
    """The table of one media split (a folder layout or a table file) with absolute file paths in `path_column`."""
    if data_args.dataset_format == folder_format:
        frame = folder_table(path, extensions, path_column, label_column)
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise InvalidData(f"{source_name(path)}: metadata lacks column {', '.join(map(repr, missing))}")
        return frame
    frame = load_table(path, data_args.dataset_format, required, name=source_name(path))
    base = path if os.path.isdir(path) else os.path.dirname(path)
    frame[path_column] = [p if os.path.isabs(str(p)) else os.path.join(base, str(p)) for p in frame[path_column]]
    return frame


def media_frames(paths, data_args, **layout):
    """(train, validation or None, retention or None) tables of `media_table(path, data_args, **layout)`."""

    def load(path):
        return media_table(path, data_args, **layout) if path is not None else None

    train = load(paths.train)
    if data_args.max_train_samples:
        train = train.iloc[: data_args.max_train_samples].reset_index(drop=True)
    return train, load(paths.validation), load(paths.retention)


def load_image(path: str, *, row: int | None = None):
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        where = f" (row {row})" if row else ""
        raise InvalidData(f"{path}{where}: unreadable image ({exc})") from exc


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy) to the model's rate."""
    if source_rate == target_rate:
        return wave.astype(np.float32)
    # Late on purpose: scipy.signal takes over a second to import, and only audio at another rate needs it.
    from scipy.signal import resample_poly

    g = gcd(source_rate, target_rate)
    return resample_poly(wave, target_rate // g, source_rate // g).astype(np.float32)


def load_waveform(path: str, target_rate: int, *, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 waveform at `target_rate`."""
    try:
        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, soundfile.LibsndfileError) as exc:
        raise InvalidData(f"{path}: unreadable audio ({exc})") from exc
    wave = resample(wave.mean(axis=1), rate, target_rate)
    if max_seconds:
        wave = wave[: int(max_seconds * target_rate)]
    if wave.size == 0:
        raise InvalidData(f"{path}: the audio is empty")
    return wave
