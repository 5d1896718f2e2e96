"""Tiny generated data for the trainer tests: sentiment rows, CSV files, word-level tokenizers.

Plain helpers live here, not in conftest.py: a test module that imports from `conftest` gets whichever
conftest pytest imported last under that name (tests/sandbox has one too).
"""

from __future__ import annotations

import random

POSITIVE = ["good", "great", "excellent", "lovely", "superb", "fun", "brilliant", "delightful"]
NEGATIVE = ["bad", "awful", "boring", "terrible", "dull", "poor", "horrible", "weak"]
FILLER = [
    "the",
    "movie",
    "was",
    "a",
    "really",
    "film",
    "story",
    "and",
    "acting",
    "plot",
    "very",
    "quite",
    "this",
    "product",
    "it",
]
WORDS = POSITIVE + NEGATIVE + FILLER
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        cue = POSITIVE if label == "positive" else NEGATIVE
        words = rng.sample(FILLER, 4) + [rng.choice(cue), rng.choice(cue)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path, rows: list[dict]) -> str:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def word_level_tokenizer(
    words: list[str],
    *,
    specials: list[str],
    eos: str | None = None,
    pad: str = "<pad>",
    unk: str = "<unk>",
    append_eos: bool = False,
):
    """A fast word-level tokenizer over `words` (ids: specials first), built in-process."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(specials + [w for w in words if w not in specials])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if append_eos:
        core.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, vocab[eos])]
        )
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=pad, unk_token=unk, eos_token=eos)


LM_WORDS = "the a cat dog bird sat ran flew on under over mat tree roof quickly slowly today".split()
