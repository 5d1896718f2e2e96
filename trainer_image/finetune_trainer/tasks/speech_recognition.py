"""speech-recognition: CTC on Wav2Vec2-like models with a character vocabulary; word error rate."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCTC, Wav2Vec2CTCTokenizer, Wav2Vec2Processor

from finetune_trainer.errors import InvalidData
from finetune_trainer.eval_metrics import word_error_rate
from finetune_trainer.media import AUDIO_EXTENSIONS, media_frames, media_table
from finetune_trainer.tables import check_no_blanks, source_name
from finetune_trainer.tasks.audio_classification import load_feature_extractor, waveform_dataset
from finetune_trainer.tasks.common import argmax_logits, column, load_model_config, split_datasets, whole_dataset
from finetune_trainer.tasks.task_setup import TaskSetup, split_rows, with_new_head

PAD, UNK, WORD_DELIMITER = "<pad>", "<unk>", "|"


def char_vocab(transcripts) -> dict[str, int]:
    """CTC vocabulary: pad (the CTC blank, id 0), unk, "|" for spaces, then the sorted characters. Pure."""
    chars = sorted({c for text in transcripts for c in str(text).lower() if c != " "})
    return {
        token: i
        for i, token in enumerate(
            [PAD, UNK, WORD_DELIMITER] + [c for c in chars if c not in (PAD, UNK, WORD_DELIMITER)]
        )
    }


def load_or_build_processor(model_path: str, model_args, transcripts):
    """The model's own Wav2Vec2 processor when it ships a tokenizer, else one with a vocabulary from train."""
    extractor = load_feature_extractor(model_path, model_args.model_uri)
    if os.path.isfile(os.path.join(model_path, "vocab.json")):
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(model_path, local_files_only=True)
        return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer), False
    folder = tempfile.mkdtemp(prefix="ctc-vocab-")
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(char_vocab(transcripts), f)
    tokenizer = Wav2Vec2CTCTokenizer(
        os.path.join(folder, "vocab.json"),
        unk_token=UNK,
        pad_token=PAD,
        word_delimiter_token=WORD_DELIMITER,
        do_lower_case=False,
    )
    return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer), True


def ctc_collator(processor):
    def collate(features: list[dict]) -> dict:
        batch = processor.feature_extractor(
            [f["input_values"] for f in features],
            sampling_rate=processor.feature_extractor.sampling_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        longest = max(len(f["labels"]) for f in features)
        labels = [list(f["labels"]) + [-100] * (longest - len(f["labels"])) for f in features]
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return dict(batch)

    return collate


def wer_metrics(processor):
    def compute(eval_pred) -> dict[str, float]:
        pad = processor.tokenizer.pad_token_id
        # Trainer pads predictions of different lengths with -100 when it joins batches.
        predictions = np.where(np.asarray(eval_pred.predictions) < 0, pad, eval_pred.predictions)
        references = np.where(eval_pred.label_ids < 0, processor.tokenizer.pad_token_id, eval_pred.label_ids)
        hypotheses = processor.tokenizer.batch_decode(predictions)
        targets = processor.tokenizer.batch_decode(references, group_tokens=False)
        return {"wer": word_error_rate(hypotheses, targets)}

    return compute


def _transcript_layout(audio_col: str, text_col: str) -> dict:
    """How a transcript table is read: an audiofolder or a table of audio paths, both columns required."""
    return {
        "folder_format": "audiofolder",
        "extensions": AUDIO_EXTENSIONS,
        "path_column": audio_col,
        "label_column": text_col,
        "required": [audio_col, text_col],
    }


def transcript_frames(paths, data_args, audio_col: str, text_col: str):
    """(train, validation, retention) tables of audio files and their transcripts; no transcript blank."""
    frames = media_frames(paths, data_args, **_transcript_layout(audio_col, text_col))
    for frame, path in zip(frames, (paths.train, paths.validation, paths.retention)):
        if frame is not None:
            check_no_blanks(frame, text_col, source_name(path))
    return frames


def transcript_table(path, data_args, audio_col: str, text_col: str):
    """One table of audio files and their transcripts (a held-out test set); no transcript blank."""
    frame = media_table(path, data_args, **_transcript_layout(audio_col, text_col))
    check_no_blanks(frame, text_col, source_name(path))
    return frame


def transcript_ids(tokenizer, transcripts, rows: list[int], source: str) -> list[list[int]]:
    """Label ids of every (lowercased) transcript; one of `rows` with a character unknown to the vocabulary is an error."""
    ids = tokenizer([str(t).lower() for t in transcripts])["input_ids"]
    for row in rows:
        if tokenizer.unk_token_id in ids[row]:
            raise InvalidData(f"{source} row {row + 1}: transcript has characters outside the model's vocabulary")
    return ids


def ctc_model(model_path: str, model_args, tokenizer, new_vocab: bool):
    overrides = {"ctc_loss_reduction": "mean", "pad_token_id": tokenizer.pad_token_id}
    if new_vocab:
        overrides["vocab_size"] = len(tokenizer)
    # A new vocabulary means a new output layer (lm_head) sized to it.
    return with_new_head(AutoModelForCTC, model_path, load_model_config(model_path, model_args, **overrides))


def build(model_path, model_args, data_args, run_args, paths) -> TaskSetup:
    audio_col, text_col = column(data_args, "audio", "audio"), column(data_args, "transcript", "transcript")
    train, validation, retention = transcript_frames(paths, data_args, audio_col, text_col)
    processor, new_vocab = load_or_build_processor(model_path, model_args, train[text_col])
    rate = processor.feature_extractor.sampling_rate

    def dataset(frame, path, rows, train_mode):
        ids = transcript_ids(processor.tokenizer, frame[text_col], rows, source_name(path))
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
    model = ctc_model(model_path, model_args, processor.tokenizer, new_vocab)
    return TaskSetup(
        model=model,
        processor=processor,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        retention_dataset=retention_ds,
        evaluation_set=lambda path: whole_dataset(
            dataset, transcript_table(path, data_args, audio_col, text_col), path
        ),
        data_collator=ctc_collator(processor),
        compute_metrics=wer_metrics(processor),
        preprocess_logits_for_metrics=argmax_logits,
        main_metric="wer",
        head_modules=["lm_head"],
        extra_training_arguments={"remove_unused_columns": False},
        data_summary={
            **split_rows(train_ds, eval_ds, retention_ds),
            "sampling_rate": rate,
            "vocabulary": "built from train transcripts" if new_vocab else "the model's",
        },
    )
