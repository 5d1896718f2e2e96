"""Training-data augmentation, applied per example when the train set is read (never to eval data).

torchvision does not import with the pinned torch, so images are augmented with PIL and numpy.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageEnhance


class TokenDropoutDataset(torch.utils.data.Dataset):
    """Replaces each non-special token with the mask (else unk) token with probability p, per read."""

    def __init__(self, base, tokenizer, probability: float, seed: int):
        self.base = base
        self.probability = probability
        self.replacement = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
        self.special = set(tokenizer.all_special_ids)
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        example = dict(self.base[i])
        example["input_ids"] = drop_tokens(
            example["input_ids"], self.probability, self.replacement, self.special, self.rng
        )
        return example


def drop_tokens(ids: list[int], probability: float, replacement: int, special: set[int], rng) -> list[int]:
    if replacement is None:
        return list(ids)
    hits = rng.random(len(ids)) < probability
    return [replacement if hit and tok not in special else tok for tok, hit in zip(ids, hits)]


class MappedDataset(torch.utils.data.Dataset):
    """A dataset whose examples are made on read by `make(row_index, train)` (decode, augment, process)."""

    def __init__(self, n: int, make):
        self.n = n
        self.make = make

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.make(i)


# ---- images (PIL) ----


def random_resized_crop(image, rng, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3)):
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
            return image.crop((left, top, left + w, top + h)).resize((width, height))
    return image


def color_jitter(image, rng, strength=0.3):
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(1.0 + rng.uniform(-strength, strength))
    return image


def augment_image(image, rng):
    image = random_resized_crop(image, rng)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return color_jitter(image, rng)


# ---- audio (numpy) ----


def augment_waveform(wave: np.ndarray, rng, sampling_rate: int) -> np.ndarray:
    """Random gain (±6 dB), a circular time shift of up to 100 ms, and white noise at 30-50 dB SNR."""
    wave = wave * (10 ** (rng.uniform(-6, 6) / 20))
    wave = np.roll(wave, int(rng.integers(-sampling_rate // 10, sampling_rate // 10 + 1)))
    power = float(np.mean(wave**2)) or 1e-8
    noise_power = power / (10 ** (rng.uniform(30, 50) / 10))
    return (wave + rng.normal(0.0, np.sqrt(noise_power), size=wave.shape)).astype(np.float32)
