"""image-classification, audio-classification and speech-recognition on tiny models and generated media."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from finetune_trainer import main
from finetune_trainer.augment import augment_image, augment_waveform
from finetune_trainer.errors import EXIT_INVALID_DATA, EXIT_OK
from finetune_trainer.media import resample
from finetune_trainer.tasks.speech_recognition import char_vocab


def _image(color, rng):
    from PIL import Image

    pixels = np.clip(np.array(color)[None, None, :] + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-wav2vec2")
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        vocab_size=8,
    )
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return str(folder)


def _tone(frequency, rate=8000, seconds=0.25, rng=None):
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * frequency * t)
    if rng is not None:
        wave = wave + rng.normal(0, 0.02, t.shape)
    return wave.astype(np.float32)


def _write_tones(root, n, seed):
    import soundfile

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label, freq, text = ("low", 200, "hi") if i % 2 == 0 else ("high", 2000, "yo")
        path = root / f"{label}-{i}.wav"
        soundfile.write(path, _tone(freq * rng.uniform(0.9, 1.1), rng=rng), 8000)
        rows.append({"audio": path.name, "label": label, "transcript": text})
    pd.DataFrame(rows).to_csv(root / "data.csv", index=False)
    return str(root / "data.csv")


def test_image_classification_from_imagefolder_learns_colours(tiny_vit, tmp_path, write_config):
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("val", 16)):
        for label, color in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(n // 2):
                _image(color, rng).save(folder / f"{i}.png")
    out = tmp_path / "out"
    code = main(
        write_config(
            task="image-classification",
            model_uri=tiny_vit,
            train_uri=str(tmp_path / "train"),
            validation_uri=str(tmp_path / "val"),
            test_uris={"held_out": str(tmp_path / "val")},
            dataset_format="imagefolder",
            output_uri=str(out),
            augment=True,
            max_steps=20,
            batch_size=16,
            learning_rate=5e-3,
            checkpoint_steps=100,
            eval_strategy="steps",
            eval_steps=20,
        )
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["blue", "red"]
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert metrics["eval_accuracy"] >= 0.9
    # A test set is read and scored as the validation set is: the same folder gives the same numbers.
    assert metrics["test_held_out_accuracy"] == metrics["eval_accuracy"]
    assert metrics["test_held_out_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4)
    assert (out / "preprocessor_config.json").exists()


def test_unreadable_image_is_invalid_data(tiny_vit, tmp_path, write_config, termination_log):
    (tmp_path / "a.png").write_bytes(b"not a png")
    pd.DataFrame([{"image": "a.png", "label": "x"}, {"image": "a.png", "label": "y"}]).to_csv(
        tmp_path / "t.csv", index=False
    )
    code = main(
        write_config(
            task="image-classification",
            model_uri=tiny_vit,
            train_uri=str(tmp_path / "t.csv"),
            output_uri=str(tmp_path / "o"),
        )
    )
    assert code == EXIT_INVALID_DATA
    assert "a.png (row 1): unreadable image" in json.loads(termination_log.read_text())["message"]


def test_audio_classification_from_a_table_learns_tones(tiny_wav2vec2, tmp_path, write_config):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    train, val = _write_tones(tmp_path / "train", 32, 1), _write_tones(tmp_path / "val", 8, 2)
    out = tmp_path / "out"
    code = main(
        write_config(
            task="audio-classification",
            model_uri=tiny_wav2vec2,
            train_uri=train,
            validation_uri=val,
            test_uris={"held_out": val},
            output_uri=str(out),
            augment=True,
            max_steps=15,
            batch_size=8,
            learning_rate=3e-3,
            checkpoint_steps=100,
            eval_strategy="steps",
            eval_steps=15,
        )
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["sampling_rate"] == 16000
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert metrics["test_held_out_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4)


def test_speech_recognition_ctc_with_a_vocabulary_from_train(tiny_wav2vec2, tmp_path, write_config):
    (tmp_path / "train").mkdir()
    train = _write_tones(tmp_path / "train", 32, 3)
    out = tmp_path / "out"
    code = main(
        write_config(
            task="speech-recognition",
            model_uri=tiny_wav2vec2,
            train_uri=train,
            validation_split=0.25,
            test_uris={"seen": train},
            output_uri=str(out),
            max_steps=15,
            batch_size=8,
            learning_rate=3e-3,
            checkpoint_steps=100,
            eval_strategy="steps",
            eval_steps=15,
        )
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert metrics["eval_wer"] >= 0.0 and "eval_wer_before" in metrics
    assert metrics["test_seen_wer"] >= 0.0 and metrics["data"]["test_rows"] == {"seen": 32}
    assert json.loads((out / "vocab.json").read_text()) == char_vocab(["hi", "yo"])
    from transformers import Wav2Vec2Processor

    saved = Wav2Vec2Processor.from_pretrained(out)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == len(saved.tokenizer)
    assert saved.tokenizer.decode(saved.tokenizer("hi yo")["input_ids"]) == "hi yo"


def test_resample_and_augmentations_keep_shapes():
    wave = _tone(440, rate=8000, seconds=1.0)
    assert resample(wave, 8000, 16000).shape == (16000,)
    rng = np.random.default_rng(0)
    augmented = augment_waveform(resample(wave, 8000, 16000), rng, 16000)
    assert (
        augmented.shape == (16000,)
        and augmented.dtype == np.float32
        and not np.allclose(augmented, resample(wave, 8000, 16000))
    )
    image = _image((10, 200, 10), rng)
    assert augment_image(image, rng).size == image.size


def test_image_classification_lora_trains_the_head_in_full(tiny_vit, tmp_path, write_config):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(16):
        label, color = ("red", (200, 30, 30)) if i % 2 else ("blue", (30, 30, 200))
        _image(color, rng).save(tmp_path / f"{i}.png")
        rows.append({"file": f"{i}.png", "colour": label})
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    out = tmp_path / "out"
    code = main(
        write_config(
            task="image-classification",
            model_uri=tiny_vit,
            train_uri=str(tmp_path / "train.parquet"),
            dataset_format="parquet",
            columns={"image": "file", "label": "colour"},
            output_uri=str(out),
            method="lora",
            max_steps=4,
            batch_size=8,
            checkpoint_steps=100,
        )
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["lora_target_modules"] == ["q_proj", "v_proj"]  # ViT's names in transformers 5
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] == ["classifier"]
