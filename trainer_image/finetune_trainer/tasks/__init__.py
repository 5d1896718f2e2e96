"""One module per task; each builds a TaskSetup (model, processor, datasets, collator, metrics).

`build_task` dispatches on ModelArguments.task and imports only the module it needs, with the
libraries that task needs.
"""

from __future__ import annotations

import importlib

from finetune_trainer.tasks.task_setup import DataPaths, TaskSetup

__all__ = ["DataPaths", "TaskSetup", "build_task"]

_MODULES = {
    "text-classification": "text_classification",
    "token-classification": "token_classification",
    "causal-lm": "causal_lm",
    "seq2seq": "seq2seq",
    "image-classification": "image_classification",
    "audio-classification": "audio_classification",
    "speech-recognition": "speech_recognition",
}


def build_task(task: str, model_path: str, model_args, data_args, run_args, paths: DataPaths) -> TaskSetup:
    module = importlib.import_module(f"finetune_trainer.tasks.{_MODULES[task]}")
    return module.build(model_path, model_args, data_args, run_args, paths)
