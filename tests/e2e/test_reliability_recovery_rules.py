"""The pure rules behind the recovery the sandbox tests exercise: retry delays after a failed
reconcile, and the final progress of a job whose last report was lost (no sandbox needed)."""

from __future__ import annotations

from datetime import datetime, timezone

from finetune_operator.progress.records import JobRecord, progress_status
from finetune_operator.progress.report import ProgressReport
from finetune_operator.reconcile.loop import RETRY_MAX_DELAY_SECONDS, retry_delay
from finetune_operator.spec import parse_spec
from finetune_operator.status import completed_progress, ran_to_completion
from sandbox_support import finetunejob

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def spec(**overrides):
    return parse_spec(finetunejob("job", "team", **overrides)["spec"], "job")


def test_failed_reconciles_back_off_exponentially_from_one_second_to_a_cap() -> None:
    assert [retry_delay(n) for n in range(6)] == [1, 2, 4, 8, 16, RETRY_MAX_DELAY_SECONDS]
    assert retry_delay(10_000) == RETRY_MAX_DELAY_SECONDS


def test_a_succeeded_job_without_early_stopping_ran_all_its_steps() -> None:
    assert ran_to_completion(spec(), {"phase": "Succeeded"})
    assert not ran_to_completion(spec(), {"phase": "Running"})
    early = spec(
        dataset={"validationSplit": 0.25},
        hyperparameters={"maxSteps": 6, "evalStrategy": "steps", "evalSteps": 2},
        regularization={"earlyStopping": {"patience": 2}},
    )
    assert not ran_to_completion(early, {"phase": "Succeeded"})


def test_completed_progress_fills_in_the_lost_final_report() -> None:
    stale = {"step": 6, "totalSteps": 20, "percent": 30, "loss": 0.5, "etaSeconds": 9, "eta": "9s"}
    final = completed_progress(spec(), stale)
    assert final == {"step": 20, "totalSteps": 20, "percent": 100, "loss": 0.5, "etaSeconds": 0, "eta": "0s"}
    assert completed_progress(spec(), final) is None  # already complete: nothing to write
    # No report ever landed: the planned steps come from the spec.
    assert completed_progress(spec(), None)["step"] == 6


def test_a_finished_record_reports_its_planned_steps_even_from_an_older_report() -> None:
    record = JobRecord("team", "job")
    record.accept(
        ProgressReport.model_validate(
            {"event": "interval", "step": 6, "totalSteps": 20, "time": "2026-11-28T11:59:00Z"}
        ),
        NOW,
    )
    assert progress_status(record, NOW)["progress"]["percent"] == 30
    record.finished = True
    progress = progress_status(record, NOW)["progress"]
    assert (progress["step"], progress["percent"], progress["etaSeconds"]) == (20, 100, 0)
