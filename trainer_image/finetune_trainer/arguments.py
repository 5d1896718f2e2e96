"""The trainer's run contract: one JSON file, parsed into these dataclasses by HfArgumentParser.

The operator renders this file from a FineTuneJob spec (finetune_operator.trainer_config) and mounts it
from a ConfigMap; `ftjob train job.yaml` renders the same file locally. Keys are the field names below,
all in one flat JSON object; an unknown key is an error, so the two sides cannot drift apart silently
(tests/trainer/test_contract.py renders every sample and parses it here).

URIs keep their scheme (hf://, pvc://, s3://, file://); the trainer resolves pvc:// through the mount
table in the FINETUNE_VOLUME_MOUNTS environment variable (claim name -> mount path) that the operator
sets on every trainer container.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

TASKS = (
    "text-classification",
    "token-classification",
    "causal-lm",
    "seq2seq",
    "image-classification",
    "audio-classification",
    "speech-recognition",
)


@dataclass
class ModelArguments:
    task: str = field(metadata={"help": f"One of {', '.join(TASKS)}."})
    model_uri: str = field(
        metadata={"help": "Pretrained model: hf://org/name, pvc://claim/path, s3://bucket/prefix or file:///path."}
    )
    model_revision: str = field(
        default="main", metadata={"help": "Hub revision (branch, tag or commit) for hf:// models."}
    )
    method: str = field(default="full", metadata={"help": "full | lora | freeze."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] = field(
        default_factory=list, metadata={"help": "Modules to adapt; empty: chosen per architecture."}
    )
    merge_adapter: bool = field(
        default=False, metadata={"help": "Also save the base model with the adapter merged in."}
    )
    freeze_trainable_layers: int = field(
        default=2, metadata={"help": "With method freeze: how many top layers train (the head always trains)."}
    )
    dropout: Optional[float] = field(default=None, metadata={"help": "Override the model's dropout probabilities."})

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if self.method not in ("full", "lora", "freeze"):
            raise ValueError(f"method must be full, lora or freeze; got {self.method!r}")


@dataclass
class DataArguments:
    train_uri: str = field(metadata={"help": "Training data file or folder (URI)."})
    validation_uri: Optional[str] = field(
        default=None, metadata={"help": "Validation data (URI); excludes validation_split."}
    )
    validation_split: Optional[float] = field(
        default=None, metadata={"help": "Fraction of train held out for validation."}
    )
    retention_uri: Optional[str] = field(
        default=None, metadata={"help": "Data evaluated before and after training to measure forgetting."}
    )
    test_uris: dict = field(
        default_factory=dict,
        metadata={"help": "Held-out test sets, name -> URI, evaluated after training (metrics test_<name>_*)."},
    )
    dataset_format: str = field(
        default="csv", metadata={"help": "csv | json | jsonl | parquet | imagefolder | audiofolder."}
    )
    columns: dict = field(
        default_factory=dict,
        metadata={
            "help": "Role -> column name (text, textPair, label, tokens, tags, prompt, response, source, target, image, audio, transcript)."
        },
    )
    labels: list[str] = field(
        default_factory=list, metadata={"help": "Label names in id order; inferred from train when empty."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncate token sequences to this length."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use at most this many training rows."})
    augment: bool = field(default=False, metadata={"help": "Augment training data (per modality)."})
    token_dropout: float = field(default=0.0, metadata={"help": "Text augmentation: probability of masking a token."})

    def __post_init__(self) -> None:
        if self.validation_uri and self.validation_split:
            raise ValueError("set validation_uri or validation_split, not both")


@dataclass
class RunArguments:
    output_uri: str = field(metadata={"help": "Where the model, checkpoints, metrics.json and model card go (URI)."})
    checkpoint_steps: int = field(default=200, metadata={"help": "Save a checkpoint every N optimizer steps."})
    checkpoints_to_keep: int = field(default=2, metadata={"help": "Keep the newest N complete checkpoints."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate."})
    epochs: float = field(default=3.0, metadata={"help": "Training epochs (ignored when max_steps is set)."})
    max_steps: Optional[int] = field(default=None, metadata={"help": "Total optimizer steps; overrides epochs."})
    batch_size: int = field(default=16, metadata={"help": "Per-device batch size."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of steps for LR warmup."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing factor."})
    precision: str = field(
        default="auto", metadata={"help": "auto | bf16 | fp16 | fp32; falls back to fp32 without a GPU."}
    )
    seed: int = field(default=42, metadata={"help": "Random seed."})
    eval_strategy: str = field(default="epoch", metadata={"help": "epoch | steps | no."})
    eval_steps: Optional[int] = field(
        default=None, metadata={"help": "Evaluate every N steps with eval_strategy steps."}
    )
    early_stopping_metric: Optional[str] = field(
        default=None, metadata={"help": "Stop when this eval metric stops improving."}
    )
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Evaluations without improvement before stopping."}
    )
    early_stopping_greater_is_better: Optional[bool] = field(
        default=None, metadata={"help": "Unset: inferred from the metric name."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log train loss every N steps."})
    job_name: str = field(default="", metadata={"help": "FineTuneJob name (for reports and the model card)."})
    job_namespace: str = field(default="", metadata={"help": "FineTuneJob namespace."})

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32; got {self.precision!r}")
        if self.eval_strategy not in ("epoch", "steps", "no"):
            raise ValueError(f"eval_strategy must be epoch, steps or no; got {self.eval_strategy!r}")


ARGUMENT_CLASSES = (ModelArguments, DataArguments, RunArguments)


def parse_config_file(path: str) -> tuple[ModelArguments, DataArguments, RunArguments]:
    """Parse the mounted JSON config; unknown keys are an error."""
    # Late on purpose: importing this module must not load transformers (and torch): it is the contract
    # the operator's tests import without the trainer's dependencies.
    from transformers import HfArgumentParser

    parser = HfArgumentParser(ARGUMENT_CLASSES)
    model_args, data_args, run_args = parser.parse_json_file(path, allow_extra_keys=False)
    return model_args, data_args, run_args
