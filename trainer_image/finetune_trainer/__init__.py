"""The finetune-operator trainer: one JSON config in, a fine-tuned model, metrics.json and a model card out.

`main` is imported lazily so that `import finetune_trainer.arguments` (the operator's contract tests)
does not pull in torch.
"""


def main(config_path: str) -> int:
    """Run one fine-tuning job in-process and return its exit code (see docs/pod-contract.md)."""
    from finetune_trainer.run import main as run_main

    return run_main(config_path)
