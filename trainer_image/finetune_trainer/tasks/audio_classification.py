"""audio-classification: audiofolder or a path+label table; Wav2Vec2-like models; accuracy and macro-F1."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

from finetune_trainer.augment import MappedDataset, augment_waveform
from finetune_trainer.errors import InvalidData
from finetune_trainer.labels import encode_labels, infer_labels
from finetune_trainer.media import AUDIO_EXTENSIONS, load_waveform, media_frames, media_table
from finetune_trainer.tables import source_name
from finetune_trainer.tasks.common import argmax_logits, classification_config, column, split_datasets, whole_dataset
from finetune_trainer.tasks.image_classification import head_modules
from finetune_trainer.tasks.task_setup import TaskSetup
from finetune_trainer.tasks.text_classification import classification_metrics

MAX_SECONDS = 30.0  # longer clips are cut: attention cost grows with the square of their length


def load_feature_extractor(model_path: str, model_uri: str):
    try:
        return AutoFeatureExtractor.from_pretrained(model_path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidData(
            f"model {model_uri}: no feature extractor config (preprocessor_config.json) in {model_path} ({exc})"
        ) from exc


def waveform_dataset(files: list[str], rows: list[int], rate: int, extra, *, augment: bool, seed: int):
    """Examples {"input_values": waveform, **extra(row)}, decoded on read; files are checked up front."""
    for row in rows:
        load_waveform(files[row], rate, max_seconds=0.01)
    rng = np.random.default_rng(seed)

    def make(i):
        row = rows[i]
        wave = load_waveform(files[row], rate, max_seconds=MAX_SECONDS)
        if augment:
            wave = augment_waveform(wave, rng, rate)
        return {"input_values": wave, **extra(row)}

    return MappedDataset(len(rows), make)


def audio_collator(feature_extractor):
    def collate(features: list[dict]) -> dict:
        batch = feature_extractor(
            [f["input_values"] for f in features],
            sampling_rate=feature_extractor.sampling_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return dict(batch)

    return collate


def build(model_path, model_args, data_args, run_args, paths) -> TaskSetup:
    audio_col, label_col = column(data_args, "audio", "audio"), column(data_args, "label", "label")
    layout = dict(
        folder_format="audiofolder",
        extensions=AUDIO_EXTENSIONS,
        path_column=audio_col,
        label_column=label_col,
        required=[audio_col, label_col],
    )
    train, validation, retention = media_frames(paths, data_args, **layout)
    labels = list(data_args.labels) or infer_labels(train[label_col])
    if len(labels) < 2:
        raise InvalidData(f"{source_name(paths.train)}: only the label {labels}; a classifier needs at least 2")
    extractor = load_feature_extractor(model_path, model_args.model_uri)
    rate = extractor.sampling_rate

    def dataset(frame, path, rows, train_mode):
        ids = encode_labels(list(frame[label_col]), labels, source=source_name(path), column=label_col)
        return waveform_dataset(
            list(frame[audio_col]),
            rows,
            rate,
            lambda row: {"labels": ids[row]},
            augment=train_mode and data_args.augment,
            seed=run_args.seed,
        )

    train_ds, eval_ds, retention_ds = split_datasets(
        dataset, (train, validation, retention), paths, data_args, run_args
    )

    config = classification_config(model_path, model_args, labels)
    model = AutoModelForAudioClassification.from_pretrained(
        model_path, config=config, ignore_mismatched_sizes=True, local_files_only=True
    )
    return TaskSetup(
        model=model,
        processor=extractor,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        retention_dataset=retention_ds,
        evaluation_set=lambda path: whole_dataset(dataset, media_table(path, data_args, **layout), path),
        data_collator=audio_collator(extractor),
        compute_metrics=classification_metrics(len(labels)),
        preprocess_logits_for_metrics=argmax_logits,
        main_metric="accuracy",
        labels=labels,
        head_modules=head_modules(model),
        extra_training_arguments={"remove_unused_columns": False},
        data_summary={
            "train_rows": len(train_ds),
            "validation_rows": len(eval_ds) if eval_ds is not None else 0,
            "retention_rows": len(retention_ds) if retention_ds is not None else 0,
            "sampling_rate": rate,
        },
    )
