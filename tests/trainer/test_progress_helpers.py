"""Shared pieces of the progress tests: the report schema of docs/progress.md as a validator, a local
progress endpoint (aiohttp) that records requests and answers as scripted, and a tiny Trainer run.
The tests at the bottom prove the validator rejects what the schema rejects."""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import threading
import time

import pytest

# ---- the report schema, transcribed from the table in docs/progress.md ----

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
EVAL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
EVENTS = {"begin", "interval", "log", "evaluate", "save", "end"}
REQUIRED = {"time", "event", "step", "totalSteps"}
OPTIONAL = {
    "epoch",
    "loss",
    "learningRate",
    "evalMetrics",
    "samplesPerSecond",
    "tokensPerSecond",
    "checkpoint",
    "gpu",
    "firstStepTime",
    "pod",
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def validate_report(body: dict) -> None:
    """Raise AssertionError naming the offending key when `body` breaks the protocol's schema."""
    assert isinstance(body, dict), "the report must be a JSON object"
    assert len(json.dumps(body).encode()) <= 16 * 1024, "body larger than 16 KiB"
    unknown = set(body) - REQUIRED - OPTIONAL
    assert not unknown, f"unknown keys {unknown}"
    missing = REQUIRED - set(body)
    assert not missing, f"missing keys {missing}"
    assert isinstance(body["time"], str) and RFC3339.match(body["time"]), "time"
    assert body["event"] in EVENTS, "event"
    assert _is_int(body["step"]) and body["step"] >= 0, "step"
    assert _is_int(body["totalSteps"]) and body["totalSteps"] >= 0, "totalSteps"
    for key in ("epoch", "learningRate", "samplesPerSecond", "tokensPerSecond"):
        if key in body:
            assert _is_number(body[key]) and body[key] >= 0, key
    if "loss" in body:
        assert _is_number(body["loss"]), "loss"
    if "evalMetrics" in body:
        metrics = body["evalMetrics"]
        assert isinstance(metrics, dict) and len(metrics) <= 32, "evalMetrics"
        for key, value in metrics.items():
            assert EVAL_KEY.match(key) and _is_number(value), f"evalMetrics.{key}"
    if "checkpoint" in body:
        checkpoint = body["checkpoint"]
        assert isinstance(checkpoint, dict) and set(checkpoint) == {"step", "path"}, "checkpoint"
        assert _is_int(checkpoint["step"]) and checkpoint["step"] >= 0, "checkpoint.step"
        assert isinstance(checkpoint["path"], str) and 0 < len(checkpoint["path"]) <= 1024, "checkpoint.path"
    if "gpu" in body:
        gpu = body["gpu"]
        assert isinstance(gpu, dict) and set(gpu) == {
            "count",
            "utilizationRatio",
            "memoryUsedBytes",
            "memoryTotalBytes",
        }, "gpu"
        assert _is_int(gpu["count"]) and gpu["count"] >= 0, "gpu.count"
        assert _is_number(gpu["utilizationRatio"]) and 0 <= gpu["utilizationRatio"] <= 1, "gpu.utilizationRatio"
        assert _is_int(gpu["memoryUsedBytes"]) and gpu["memoryUsedBytes"] >= 0, "gpu.memoryUsedBytes"
        assert _is_int(gpu["memoryTotalBytes"]) and gpu["memoryTotalBytes"] >= 0, "gpu.memoryTotalBytes"
    if "firstStepTime" in body:
        assert isinstance(body["firstStepTime"], str) and RFC3339.match(body["firstStepTime"]), "firstStepTime"
    if "pod" in body:
        assert isinstance(body["pod"], str) and len(body["pod"]) <= 253, "pod"


# ---- a local progress endpoint ----


class Endpoint:
    """POST sink on 127.0.0.1 run by aiohttp in its own thread.

    `answer(*replies)` queues replies for the next requests: a status code, or (status, delay_s), or
    (status, delay_s, headers), or a function of the recorded request returning one of those.
    Unscripted requests get 204."""

    def __init__(self):
        self.requests: list[dict] = []
        self._replies: list = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "test endpoint did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/progress/v1/namespaces/ns/finetunejobs/job"

    def answer(self, *replies) -> None:
        with self._lock:
            self._replies.extend(replies)

    def bodies(self) -> list[dict]:
        with self._lock:
            return [r["body"] for r in self.requests]

    def accepted(self) -> list[dict]:
        with self._lock:
            return [r["body"] for r in self.requests if r["status"] == 204]

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def _serve(self) -> None:
        from aiohttp import web

        async def handle(request):
            record = {
                "at": time.monotonic(),
                "path": request.path,
                "headers": dict(request.headers),
                "body": json.loads(await request.read()),
            }
            with self._lock:
                reply = self._replies.pop(0) if self._replies else 204
            if callable(reply):
                reply = reply(record)
            status, delay, headers = (tuple(reply) + (0.0, {}))[:3] if isinstance(reply, tuple) else (reply, 0.0, {})
            if delay:
                await asyncio.sleep(delay)
            record["status"] = status
            with self._lock:
                self.requests.append(record)
            return web.Response(status=status, text="" if status == 204 else f"scripted {status}", headers=headers)

        async def start():
            app = web.Application()
            app.router.add_post("/{tail:.*}", handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            self._ready.set()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingSender:
    """Stands in for ReportSender where a test checks what the callback submits, not the wire."""

    def __init__(self):
        self.reports: list[dict] = []
        self.flushes: list[float] = []

    def submit(self, report: dict) -> None:
        self.reports.append(report)

    def flush(self, timeout: float) -> bool:
        self.flushes.append(timeout)
        return True

    def events(self) -> list[str]:
        return [r["event"] for r in self.reports]


# ---- a tiny real training run ----


def tiny_trainer(
    output_dir,
    callbacks,
    *,
    max_steps: int = 8,
    evaluate_every: int | None = None,
    save_every: int | None = None,
    **arguments,
):
    """A 2-layer BERT classifier on 64 generated examples, CPU, `max_steps` optimizer steps."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=32,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    generator = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(64):
        ids = torch.randint(5, 40, (12,), generator=generator)
        examples.append(
            {"input_ids": ids, "attention_mask": torch.ones(12, dtype=torch.long), "labels": int(ids[0] % 2)}
        )
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        logging_steps=2,
        eval_strategy="steps" if evaluate_every else "no",
        eval_steps=evaluate_every,
        save_strategy="steps" if save_every else "no",
        save_steps=save_every or 500,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **arguments,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        eval_dataset=examples[:16] if evaluate_every else None,
        callbacks=callbacks,
    )


# ---- the validator itself ----

GOOD = {
    "time": "2026-01-02T03:04:05.678Z",
    "event": "log",
    "step": 3,
    "totalSteps": 8,
    "loss": 0.5,
    "evalMetrics": {"eval_loss": 0.4},
}


def test_validator_accepts_a_protocol_report():
    validate_report(GOOD)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"surprise": 1}, "unknown"),
        ({"step": -1}, "step"),
        ({"step": 1.5}, "step"),
        ({"totalSteps": True}, "totalSteps"),
        ({"event": "tick"}, "event"),
        ({"time": "yesterday"}, "time"),
        ({"loss": float("nan")}, "loss"),
        ({"learningRate": -0.1}, "learningRate"),
        ({"evalMetrics": {"1bad": 1.0}}, "evalMetrics.1bad"),
        ({"evalMetrics": {f"m{i}": 1.0 for i in range(33)}}, "evalMetrics"),
        ({"checkpoint": {"step": 1}}, "checkpoint"),
        (
            {"gpu": {"count": 1, "utilizationRatio": 1.5, "memoryUsedBytes": 1, "memoryTotalBytes": 2}},
            "gpu.utilizationRatio",
        ),
        ({"pod": "p" * 254}, "pod"),
    ],
)
def test_validator_rejects_what_the_schema_rejects(change, key):
    with pytest.raises(AssertionError, match=re.escape(key)):
        validate_report({**GOOD, **change})


def test_validator_requires_the_required_keys():
    body = dict(GOOD)
    del body["totalSteps"]
    with pytest.raises(AssertionError, match="totalSteps"):
        validate_report(body)
