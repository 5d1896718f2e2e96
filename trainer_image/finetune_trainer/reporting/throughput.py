"""Training throughput: samples and tokens per second, measured from step-end times."""

from __future__ import annotations

from collections import deque


def samples_per_step(args) -> int:
    """Samples in one optimizer step across all ranks, from TrainingArguments."""
    return int(args.per_device_train_batch_size) * int(args.gradient_accumulation_steps) * int(args.world_size)


class ThroughputMeter:
    """Rates over the last `window` optimizer steps, from step-end times.

    The window starts at a step end, so the first step's warm-up is never counted. After an
    evaluation or a save, `restart()` begins a fresh window so their time is not taken for slow
    training; until two new step ends exist the previous rates stand.
    """

    def __init__(self, window: int = 20):
        self._points: deque[tuple[float, int, int]] = deque(maxlen=window + 1)
        self._samples_rate: float | None = None
        self._tokens_rate: float | None = None
        self._samples_per_step = 0

    def record(self, at: float, step: int, tokens_seen: int, samples_per_step: int) -> None:
        if self._points and step <= self._points[-1][1]:
            return
        self._samples_per_step = samples_per_step
        self._points.append((at, step, tokens_seen))
        (t0, step0, tokens0), (t1, step1, tokens1) = self._points[0], self._points[-1]
        if t1 > t0 and step1 > step0:
            self._samples_rate = (step1 - step0) * samples_per_step / (t1 - t0)
            # Trainer counts tokens only when include_num_input_tokens_seen is on; no count, no rate.
            self._tokens_rate = (tokens1 - tokens0) / (t1 - t0) if tokens1 > tokens0 else self._tokens_rate

    def restart(self) -> None:
        self._points.clear()

    @property
    def samples_per_second(self) -> float | None:
        return self._samples_rate

    @property
    def tokens_per_second(self) -> float | None:
        return self._tokens_rate
