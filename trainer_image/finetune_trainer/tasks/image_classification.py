"""image-classification: imagefolder or a path+label table; AutoImageProcessor; accuracy and macro-F1."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from finetune_trainer.augment import MappedDataset, augment_image
from finetune_trainer.errors import InvalidData
from finetune_trainer.labels import encode_labels, infer_labels
from finetune_trainer.media import IMAGE_EXTENSIONS, load_image, media_frames, media_table
from finetune_trainer.tables import source_name
from finetune_trainer.tasks.common import argmax_logits, classification_config, column, split_datasets, whole_dataset
from finetune_trainer.tasks.task_setup import TaskSetup, split_rows, with_new_head
from finetune_trainer.tasks.text_classification import classification_metrics


def head_modules(model) -> list[str]:
    """Top-level modules outside the base model: the task head, trained in full under LoRA."""
    prefix = getattr(model, "base_model_prefix", "")
    return [name for name, _ in model.named_children() if name != prefix]


def stack_batch(features: list[dict]) -> dict:
    batch = {key: torch.stack([torch.as_tensor(f[key]) for f in features]) for key in features[0] if key != "labels"}
    batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    return batch


def image_dataset(processor, files: list[str], label_ids: list[int], rows: list[int], *, augment: bool, seed: int):
    """Examples {"pixel_values", "labels"} of `rows`, decoded (and augmented) on read."""
    rng = np.random.default_rng(seed)

    def make(i):
        row = rows[i]
        image = load_image(files[row], row=row + 1)
        if augment:
            image = augment_image(image, rng)
        pixels = processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "labels": label_ids[row]}

    # Check every file opens before training starts, not at step 500.
    for row in rows:
        load_image(files[row], row=row + 1)
    return MappedDataset(len(rows), make)


def build(model_path, model_args, data_args, run_args, paths) -> TaskSetup:
    image_col, label_col = column(data_args, "image", "image"), column(data_args, "label", "label")
    layout = dict(
        folder_format="imagefolder",
        extensions=IMAGE_EXTENSIONS,
        path_column=image_col,
        label_column=label_col,
        required=[image_col, label_col],
    )
    train, validation, retention = media_frames(paths, data_args, **layout)
    labels = list(data_args.labels) or infer_labels(train[label_col])
    if len(labels) < 2:
        raise InvalidData(f"{source_name(paths.train)}: only the label {labels}; a classifier needs at least 2")
    try:
        processor = AutoImageProcessor.from_pretrained(model_path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidData(
            f"model {model_args.model_uri}: no image processor config (preprocessor_config.json) in {model_path} ({exc})"
        ) from exc

    def dataset(frame, path, rows, train_mode):
        ids = encode_labels(list(frame[label_col]), labels, source=source_name(path), column=label_col)
        return image_dataset(
            processor, list(frame[image_col]), ids, rows, augment=train_mode and data_args.augment, seed=run_args.seed
        )

    train_ds, eval_ds, retention_ds = split_datasets(
        dataset, (train, validation, retention), paths, data_args, run_args
    )
    model = with_new_head(
        AutoModelForImageClassification, model_path, classification_config(model_path, model_args, labels)
    )
    return TaskSetup(
        model=model,
        processor=processor,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        retention_dataset=retention_ds,
        evaluation_set=lambda path: whole_dataset(dataset, media_table(path, data_args, **layout), path),
        data_collator=stack_batch,
        compute_metrics=classification_metrics(len(labels)),
        preprocess_logits_for_metrics=argmax_logits,
        main_metric="accuracy",
        labels=labels,
        head_modules=head_modules(model),
        extra_training_arguments={"remove_unused_columns": False},
        data_summary=split_rows(train_ds, eval_ds, retention_ds),
    )
