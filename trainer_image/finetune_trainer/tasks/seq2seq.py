"""seq2seq: `source` -> `target` (translation, summarisation) with T5/BART/Marian-like models; chrF."""

from __future__ import annotations

import numpy as np
from datasets import Dataset
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

from finetune_trainer.eval_metrics import chrf
from finetune_trainer.tables import check_no_blanks, source_name
from finetune_trainer.tasks.common import column, load_frames, load_model_config, split_off_validation, table_reader
from finetune_trainer.tasks.task_setup import TaskSetup
from finetune_trainer.tasks.text_classification import load_tokenizer


def chrf_metrics(tokenizer):
    def compute(eval_pred) -> dict[str, float]:
        predictions = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        predictions = np.where(predictions < 0, tokenizer.pad_token_id, predictions)
        references = np.where(eval_pred.label_ids < 0, tokenizer.pad_token_id, eval_pred.label_ids)
        hypotheses = [t.strip() for t in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        targets = [t.strip() for t in tokenizer.batch_decode(references, skip_special_tokens=True)]
        return {"chrf": chrf(hypotheses, targets)}

    return compute


def build(model_path, model_args, data_args, run_args, paths) -> TaskSetup:
    source_col, target_col = column(data_args, "source", "source"), column(data_args, "target", "target")
    train, validation, retention = load_frames(paths, data_args, [source_col, target_col])
    read_table = table_reader(data_args, [source_col, target_col])
    tokenizer = load_tokenizer(model_path, model_args.model_uri)

    def encode(frame, path):
        name = source_name(path)
        check_no_blanks(frame, source_col, name)
        check_no_blanks(frame, target_col, name)
        features = tokenizer(
            [str(s) for s in frame[source_col]],
            text_target=[str(t) for t in frame[target_col]],
            truncation=True,
            max_length=data_args.max_seq_length,
        )
        return Dataset.from_dict(dict(features))

    full_train = encode(train, paths.train)
    keep, held = split_off_validation(len(full_train), data_args, run_args)
    train_ds = full_train.select(keep) if held else full_train
    eval_ds = (
        full_train.select(held) if held else (encode(validation, paths.validation) if validation is not None else None)
    )
    retention_ds = encode(retention, paths.retention) if retention is not None else None

    config = load_model_config(model_path, model_args)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_path, config=config, local_files_only=True)

    return TaskSetup(
        model=model,
        processor=tokenizer,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        retention_dataset=retention_ds,
        evaluation_set=lambda path: encode(read_table(path), path),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        compute_metrics=chrf_metrics(tokenizer),
        main_metric="chrf",
        peft_task_type="SEQ_2_SEQ_LM",
        trainer_class=Seq2SeqTrainer,
        arguments_class=Seq2SeqTrainingArguments,
        # Generate at evaluation so chrF scores real outputs, not teacher-forced guesses.
        extra_training_arguments={"predict_with_generate": True, "generation_max_length": data_args.max_seq_length},
        data_summary={
            "train_rows": len(train_ds),
            "validation_rows": len(eval_ds) if eval_ds is not None else 0,
            "retention_rows": len(retention_ds) if retention_ds is not None else 0,
        },
    )
