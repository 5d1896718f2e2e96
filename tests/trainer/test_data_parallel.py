"""Two ranks train as one process does (issue 16, item 1): the same losses at every logged step, the same
gradient norms, an untrained eval_loss of ln(number of labels), the same final metrics.

Each case trains the same data with the same global batch three ways: one process with batch 16
(in-process), one process with batch 8 and 2 accumulation steps (in-process), and two processes of batch 8
(torchrun through the pod launcher, gloo on CPU). Before the fix the two-process run reported every loss
doubled (transformers multiplied a BERT classifier's mean loss by the number of ranks) and did not
all-reduce a gradient (the evaluation before training left the model without its DDP wrapper), the
accumulated run doubled the loss and the gradient, and GPT-2's losses on any number of ranks were ~14% low
(the Trainer counted a step's tokens unshifted: the untrained eval_loss was 2.58 where it is 2.99).
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import subprocess
import sys

import pandas as pd
import pytest
from finetune_trainer import main
from finetune_trainer.data_parallel import agreed, verdict
from finetune_trainer.errors import EXIT_OK
from trainer_data import LM_WORDS, sentiment_rows, word_level_tokenizer, write_csv

TOLERANCE = 0.05  # the bound; the runs below agree to about 1e-4


def test_verdict_tells_a_loss_divided_by_the_count_from_a_mean():
    assert verdict(0.8, 0.4) is True  # halves with twice the count: sum / count
    assert verdict(0.8, 0.8) is False  # the model's own mean
    assert verdict(0.0, 0.0) is None  # a batch without a loss cannot tell
    assert verdict(float("nan"), float("nan")) is None
    assert verdict(0.8, 0.6) is None  # neither: do not guess


def test_ranks_agree_on_one_verdict():
    assert agreed(2, 0) and agreed(1, 0)
    assert not agreed(0, 2) and not agreed(1, 1)
    assert not agreed(0, 0)  # no rank could tell: each micro-batch keeps the model's mean


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(config: str, tmp_path) -> None:
    env = {
        **os.environ,
        "NNODES": "1",
        "NPROC_PER_NODE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
        "FINETUNE_TERMINATION_LOG": str(tmp_path / "termination-log-2"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "finetune_trainer", config], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == EXIT_OK, done.stderr[-4000:]


def _results(out, steps: int) -> tuple[dict, dict[int, dict], dict]:
    """(metrics.json, {step: train log}, the last eval log) of a finished run."""
    metrics = json.loads((out / "metrics.json").read_text())
    state = json.loads((out / "checkpoints" / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    train = {entry["step"]: entry for entry in state["log_history"] if "loss" in entry}
    final_eval = [entry for entry in state["log_history"] if "eval_loss" in entry][-1]
    return metrics, train, final_eval


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOLERANCE)


def _train_three_ways(tmp_path, write_config, steps: int, logging_steps: int, **config) -> dict[str, tuple]:
    base = dict(
        max_steps=steps,
        logging_steps=logging_steps,
        checkpoint_steps=steps,
        eval_strategy="steps",
        eval_steps=steps,
        dropout=0.0,  # every run computes the same function of the same batches
        seed=7,
        **config,
    )
    runs = {
        "1 process": dict(batch_size=16),
        "1 process, 2 accumulation steps": dict(batch_size=8, gradient_accumulation_steps=2),
        "2 processes": dict(batch_size=8),
    }
    results = {}
    for name, shape in runs.items():
        out = tmp_path / name.replace(" ", "-").replace(",", "")
        path = write_config(**base, **shape, output_uri=str(out))
        if name == "2 processes":
            _two_processes(path, tmp_path)
        else:
            assert main(path) == EXIT_OK
        results[name] = _results(out, steps)
    return results


def _assert_same_training(results: dict[str, tuple], untrained_loss: float, steps: int, logging_steps: int) -> None:
    reference_metrics, reference_train, reference_eval = results["1 process"]
    assert sorted(reference_train) == list(range(logging_steps, steps + 1, logging_steps))
    for name, (metrics, train, final_eval) in results.items():
        assert metrics["global_step"] == steps
        assert _close(metrics["eval_loss_before"], untrained_loss), (name, metrics["eval_loss_before"])
        assert sorted(train) == sorted(reference_train), name
        for step, entry in reference_train.items():
            assert _close(train[step]["loss"], entry["loss"]), (name, step, train[step]["loss"], entry["loss"])
            # the gradient of the step, all-reduced over the ranks, is the one-process gradient
            assert _close(train[step]["grad_norm"], entry["grad_norm"]), (name, step, train[step], entry)
        assert _close(final_eval["eval_loss"], reference_eval["eval_loss"]), (name, final_eval, reference_eval)
        assert _close(metrics["eval_loss"], reference_metrics["eval_loss"]), name


@pytest.mark.slow
def test_a_classifier_trains_the_same_on_two_ranks(tiny_bert, tmp_path, write_config):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(96, seed=1))
    validation = write_csv(tmp_path / "validation.csv", sentiment_rows(32, seed=2))
    results = _train_three_ways(
        tmp_path,
        write_config,
        steps=40,
        logging_steps=4,
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=train,
        validation_uri=validation,
        learning_rate=5e-3,
        warmup_ratio=0.1,
        max_seq_length=16,
    )
    _assert_same_training(results, untrained_loss=math.log(2), steps=40, logging_steps=4)
    reference = results["1 process"][0]
    assert reference["eval_accuracy"] >= 0.85, reference  # it learned, so the trajectories had room to differ
    for name, (metrics, _, _) in results.items():
        assert metrics["eval_accuracy"] == pytest.approx(reference["eval_accuracy"], abs=1 / 32), name


def _varied_sentences(n: int, seed: int) -> list[str]:
    """Sentences of 2 to 10 words, so that ranks and micro-batches hold different numbers of tokens."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(LM_WORDS) for _ in range(rng.randint(2, 10))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_gpt2_lm(tmp_path_factory) -> tuple[str, int]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2-dp")
    tokenizer = word_level_tokenizer(LM_WORDS, specials=["<pad>", "<unk>", "<eos>"], eos="<eos>")
    torch.manual_seed(0)
    # No dropout (GPT-2 names it *_pdrop, which the trainer's dropout override leaves alone): every run
    # computes the same function of the same batches.
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, **no_dropout)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder), len(tokenizer)


def _token_averaged_loss(model_dir: str, texts: list[str]) -> float:
    """The mean next-token cross-entropy over every token of `texts` (each ending in EOS), computed here
    without the Trainer: what eval_loss must be on any number of ranks."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
            logits = model(input_ids=ids).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    return total / count


@pytest.mark.slow
def test_a_causal_lm_keeps_token_averaging_across_ranks(tiny_gpt2_lm, tmp_path, write_config):
    model, _ = tiny_gpt2_lm
    validation = _varied_sentences(16, 2)
    pd.DataFrame({"text": _varied_sentences(64, 1)}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"text": validation}).to_csv(tmp_path / "val.csv", index=False)
    results = _train_three_ways(
        tmp_path,
        write_config,
        steps=8,
        logging_steps=2,
        task="causal-lm",
        model_uri=model,
        train_uri=str(tmp_path / "train.csv"),
        validation_uri=str(tmp_path / "val.csv"),
        learning_rate=5e-3,
        max_seq_length=16,
    )
    # Rows of 3 to 11 tokens: the ranks' and micro-batches' shares of a step's tokens differ, and only a
    # loss averaged over all of them matches one process.
    _assert_same_training(results, untrained_loss=_token_averaged_loss(model, validation), steps=8, logging_steps=2)
    for metrics, _, _ in results.values():
        assert metrics["eval_loss"] < metrics["eval_loss_before"]
