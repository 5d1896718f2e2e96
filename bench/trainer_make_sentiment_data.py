"""Regenerate the shipped sample sentiment dataset (cli/finetune_cli/demo_data/sentiment/).

Sentences are composed from hand-written phrase lists (subjects, opinions, details, closers) with a
fixed seed; every sentence is unique and the train/validation/test splits share no sentence.
Run: python bench/trainer_make_sentiment_data.py
"""

from __future__ import annotations

import csv
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "trainer_image", "finetune_trainer", "data", "sentiment")

MOVIE_SUBJECTS = [
    "The movie",
    "This film",
    "The sequel",
    "The documentary",
    "The plot",
    "The script",
    "The soundtrack",
    "The lead actor",
    "The ending",
    "The director's new film",
    "This thriller",
    "The animated feature",
    "The dialogue",
    "The cinematography",
    "This comedy",
    "The cast",
    "The special effects",
]
PRODUCT_SUBJECTS = [
    "The blender",
    "These headphones",
    "The laptop",
    "This phone case",
    "The coffee maker",
    "The vacuum",
    "These running shoes",
    "The desk lamp",
    "The backpack",
    "This keyboard",
    "The water bottle",
    "The charger",
    "The mattress",
    "This jacket",
    "The kettle",
    "The tent",
    "These speakers",
]
# {be}/{has} agree with the subject ("The blender is", "These headphones are").
OPINIONS = {
    ("movie", "positive"): [
        "{be} absolutely wonderful",
        "kept me hooked from start to finish",
        "{be} brilliant",
        "made me smile the whole time",
        "{be} genuinely moving",
        "{be} a real delight",
        "turned out better than I hoped",
        "{be} clever and full of heart",
        "{has} stayed with me for days",
        "{be} one of the best I have seen this year",
        "{be} funny, warm and beautifully shot",
    ],
    ("movie", "negative"): [
        "{be} painfully boring",
        "dragged on forever",
        "made no sense at all",
        "{be} dull and predictable",
        "left me bored and annoyed",
        "{be} a huge disappointment",
        "{be} a mess from beginning to end",
        "{be} clumsy and far too long",
        "{has} no idea what it wants to be",
        "{be} the worst I have seen in years",
        "felt lazy and forgettable",
    ],
    ("product", "positive"): [
        "{be} worth every penny",
        "works perfectly",
        "{be} beautifully made",
        "exceeded my expectations",
        "{be} a joy to use",
        "feels sturdy and well designed",
        "does exactly what it promises",
        "{be} fantastic value",
        "{be} easily the best I have owned",
        "{has} held up great after months of use",
        "{be} quiet, light and reliable",
    ],
    ("product", "negative"): [
        "{be} a complete waste of money",
        "broke after two days",
        "{be} badly made",
        "fell apart almost immediately",
        "{be} not worth the price",
        "stopped working within a week",
        "feels cheap and flimsy",
        "never worked properly",
        "{be} frustrating to use",
        "{has} a terrible battery",
        "{be} loud, heavy and unreliable",
    ],
}
DETAILS = {
    ("movie", "positive"): [
        "and I would happily watch it again",
        "and the whole audience clapped",
        "and my friends loved it too",
        "and the music was perfect",
        "",
    ],
    ("movie", "negative"): [
        "and I walked out halfway",
        "and nobody in the room enjoyed it",
        "and I nearly fell asleep",
        "and the acting was wooden",
        "",
    ],
    ("product", "positive"): [
        "and I will definitely buy again",
        "and it arrived quickly",
        "and the quality really shows",
        "and my whole family uses it",
        "",
    ],
    ("product", "negative"): [
        "and I want my money back",
        "so I returned it",
        "and customer service ignored me",
        "and I regret buying it",
        "",
    ],
}
CLOSERS = {
    "positive": ["Highly recommended.", "Five stars.", "Loved it.", "A must have.", "Would recommend to anyone.", ""],
    "negative": ["Not recommended.", "One star.", "Terrible.", "Avoid.", "Very disappointing.", ""],
}


def sentence(rng: random.Random, label: str) -> str:
    domain = rng.choice(["movie", "product"])
    subject = rng.choice(MOVIE_SUBJECTS if domain == "movie" else PRODUCT_SUBJECTS)
    plural = subject.startswith("These") or subject.endswith("effects")
    opinion = rng.choice(OPINIONS[domain, label]).format(be="are" if plural else "is", has="have" if plural else "has")
    detail, closer = rng.choice(DETAILS[domain, label]), rng.choice(CLOSERS[label])
    text = f"{subject} {opinion}" + (f" {detail}" if detail else "") + "."
    return text + (f" {closer}" if closer else "")


def make_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < n:
        label = "positive" if len(rows) % 2 == 0 else "negative"
        text = sentence(rng, label)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = make_rows(400 + 100 + 120, seed=20261128)
    splits = {"train.csv": rows[:400], "validation.csv": rows[400:500], "test.csv": rows[500:]}
    os.makedirs(OUT, exist_ok=True)
    for name, part in splits.items():
        with open(os.path.join(OUT, name), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "label"])
            writer.writerows(part)
        print(name, len(part))


if __name__ == "__main__":
    main()
