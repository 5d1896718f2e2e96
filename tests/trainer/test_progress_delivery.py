"""The sender's one log line about delivery: what lets a multi-rank run's logs show which process reports
progress (tests/e2e/test_multi_rank.py counts it per rank)."""

from __future__ import annotations

import logging

from finetune_trainer.reporting.sender import ReportSender
from test_progress_helpers import endpoint  # noqa: F401

FAST = dict(min_backoff=0.05, max_backoff=0.4, timeout=2.0)
DELIVERED = "first progress report delivered"


def report(step: int, event: str) -> dict:
    return {"time": "2026-01-01T00:00:00.000Z", "event": event, "step": step, "totalSteps": 10}


def test_the_first_delivered_report_is_logged_once_and_a_refused_one_is_not(endpoint, caplog):
    endpoint.answer(400)  # the first report is refused and dropped: nothing was delivered yet
    sender = ReportSender(endpoint.url, **FAST)
    with caplog.at_level(logging.INFO, logger="finetune_trainer"):
        for step, event in ((1, "begin"), (2, "save"), (3, "log"), (4, "end")):
            sender.submit(report(step, event))
            assert sender.flush(5)

    assert [r["status"] for r in endpoint.requests] == [400, 204, 204, 204]
    delivered = [record.getMessage() for record in caplog.records if DELIVERED in record.getMessage()]
    assert delivered == [f"{DELIVERED} to {endpoint.url} (event save, step 2); later ones are not logged"]
