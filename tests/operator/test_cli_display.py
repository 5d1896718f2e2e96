"""What `ftjob get/describe` and the demo's progress line print, from FineTuneJob objects."""

from __future__ import annotations

from datetime import datetime, timezone

from finetune_cli import build_parser
from finetune_cli.display import COLUMNS, describe, human_duration, progress_bar, row, table

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def ftj(status=None, queue=None):
    spec = {"task": "text-classification", "model": {"source": "pvc://m/x"}, "output": {"uri": "pvc://o/y"}}
    if queue:
        spec["scheduling"] = {"queueName": queue}
    return {
        "metadata": {
            "name": "sentiment",
            "namespace": "team-a",
            "creationTimestamp": "2026-11-28T11:55:50Z",
            "uid": "u1",
        },
        "spec": spec,
        "status": status or {},
    }


def test_human_durations_read_like_kubectl():
    assert [human_duration(s) for s in (0, 45, 60, 250, 3600, 7500, 90000)] == [
        "0s",
        "45s",
        "1m",
        "4m10s",
        "1h",
        "2h5m",
        "1d1h",
    ]
    assert human_duration(None) == "-"


def test_row_shows_progress_columns_and_dashes_when_unknown():
    running = ftj(
        {"phase": "Running", "gpus": 8, "progress": {"percent": 42, "step": 420, "loss": 0.31234, "eta": "4m10s"}},
        queue="q",
    )
    assert row(running, NOW) == (
        "team-a",
        "sentiment",
        "Running",
        "42%",
        "420",
        "0.3123",
        "4m10s",
        "-",
        "8",
        "q",
        "4m10s",
    )
    assert row(ftj(), NOW)[2:9] == ("Pending", "-", "-", "-", "-", "-", "-")


def test_row_shows_a_searchs_best_objective_value():
    search = ftj(
        {
            "phase": "Running",
            "progress": {"percent": 50},
            "bestTrial": {"name": "sentiment-t2", "objectiveValue": 0.912345},
        }
    )
    assert row(search, NOW)[COLUMNS.index("BEST")] == "0.9123"


def test_describe_lists_a_searchs_trials_with_why_they_stopped():
    status = {
        "phase": "Running",
        "search": {"algorithm": "bayesian", "metric": "eval_loss", "goal": "minimize"},
        "bestTrial": {
            "name": "sentiment-t0",
            "objectiveValue": 0.31,
            "parameters": {"learningRate": 3e-4},
            "outputUri": "pvc://m/x/trials/sentiment-t0",
        },
        "trials": [
            {
                "name": "sentiment-t0",
                "state": "Succeeded",
                "objectiveValue": 0.31,
                "step": 50,
                "totalSteps": 50,
                "parameters": {"learningRate": 3e-4, "batchSize": 16},
            },
            {
                "name": "sentiment-t1",
                "state": "EarlyStopped",
                "objectiveValue": 0.69,
                "step": 20,
                "totalSteps": 50,
                "parameters": {"learningRate": 1e-9, "batchSize": 8},
                "message": "eval_loss 0.69 at step 20 is worse than the median 0.4 of 1 completed trials at that step",
            },
        ],
    }
    text = describe(ftj(status), [], NOW)
    assert "Search:      bayesian, minimize eval_loss" in text
    assert "Best trial:  sentiment-t0 eval_loss=0.31  (learningRate=0.0003)" in text
    trial_rows = [line for line in text.splitlines() if line.startswith("  sentiment-t")]
    assert trial_rows[0].split()[:5] == ["sentiment-t0", "Succeeded", "0.31", "50/50", "learningRate=0.0003,"]
    assert "EarlyStopped" in trial_rows[1] and "worse than the median" in trial_rows[1]


def test_table_aligns_columns():
    text = table([("a", "Running"), ("longer-name", "Failed")], ("NAME", "PHASE"))
    lines = text.splitlines()
    assert lines[0] == "NAME          PHASE"
    assert lines[2].startswith("longer-name   Failed")


def test_progress_bar_only_says_what_the_status_says():
    assert (
        progress_bar({"phase": "Starting", "message": "0 of 1 trainer pods running"})
        == "Starting  0 of 1 trainer pods running"
    )
    line = progress_bar(
        {"phase": "Running", "progress": {"percent": 50, "step": 10, "totalSteps": 20, "loss": 0.5, "eta": "30s"}},
        width=10,
    )
    assert line == "Running   [#####-----]  50%  step 10/20  loss 0.5000  ETA 30s"


def test_describe_explains_conditions_events_and_failure():
    status = {
        "phase": "Failed",
        "reason": "InvalidData",
        "message": "row 3 bad",
        "retries": 1,
        "failure": {"reason": "InvalidData", "message": "row 3 bad"},
        "conditions": [{"type": "Failed", "status": "True", "reason": "InvalidData", "message": "row 3 bad"}],
    }
    events = [
        {
            "type": "Warning",
            "reason": "InvalidData",
            "message": "Failed: row 3 bad",
            "lastTimestamp": "2026-11-28T11:59:00Z",
        }
    ]
    text = describe(ftj(status), events, NOW)
    assert "Failure:     InvalidData: row 3 bad" in text
    assert "  Failed   True     InvalidData   row 3 bad" in text
    assert "  Warning   InvalidData   1m    Failed: row 3 bad" in text


def test_parser_knows_every_documented_command():
    parser = build_parser()
    for argv in (
        ["demo"],
        ["sandbox", "up"],
        ["sandbox", "down"],
        ["get", "-A"],
        ["watch"],
        ["describe", "x"],
        ["logs", "x", "--rank", "1"],
        ["train", "job.yaml", "--max-steps", "5"],
    ):
        assert parser.parse_args(argv).command == argv[0]


def test_describe_names_the_rank_that_restarted_a_multi_rank_job_and_its_last_lines():
    status = {
        "phase": "Running",
        "reason": "PodsRunning",
        "retries": 1,
        "restarts": 2,
        "lastRestart": {
            "time": "2026-12-07T11:58:00Z",
            "rank": 1,
            "pod": "ft-1-abcde",
            "reason": "TrainerCrashed",
            "exitCode": 1,
            "counted": True,
            "message": "the trainer exited with code 1",
            "logTail": "Traceback (most recent call last):\nRuntimeError: boom",
        },
    }
    text = describe(ftj(status), [], NOW)
    assert (
        "Restarts:    2; last at 2026-12-07T11:58:00Z: rank 1 (pod ft-1-abcde, exit code 1) TrainerCrashed, "
        "counted against backoffLimit"
    ) in text
    assert "               RuntimeError: boom" in text
    assert "Restarts:" not in describe(ftj({"phase": "Running"}), [], NOW)
