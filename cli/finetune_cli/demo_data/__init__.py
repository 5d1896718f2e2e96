"""The data the demo and the trainer benchmarks fine-tune on. It ships with the local tooling, never in an image."""

from pathlib import Path

SENTIMENT = Path(__file__).parent / "sentiment"
