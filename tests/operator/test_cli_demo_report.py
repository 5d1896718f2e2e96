"""The demo's closing report: validation before and after, and each named test set with what it holds."""

from __future__ import annotations

import json
from pathlib import Path

from finetune_cli.demo import held_out_domains, report

FTJ = {
    "metadata": {"name": "sentiment-minilm", "creationTimestamp": "2026-12-07T10:00:00Z"},
    "spec": {
        "dataset": {
            "train": "pvc://datasets/sentiment/train.csv",
            "test": {
                "in_domain": "pvc://datasets/sentiment/test.csv",
                "out_of_domain": "pvc://datasets/sentiment/test_out_of_domain.csv",
            },
        },
        "output": {"uri": "pvc://models/sentiment-minilm"},
    },
    "status": {
        "phase": "Succeeded",
        "reason": "Completed",
        "message": "training finished",
        "completionTime": "2026-12-07T10:01:05Z",
    },
}
METRICS = {
    "eval_accuracy_before": 0.4467,
    "eval_accuracy": 0.96,
    "test_in_domain_accuracy": 0.964,
    "test_out_of_domain_accuracy": 0.955,
    "data": {"test_rows": {"in_domain": 250, "out_of_domain": 200}},
}


def _files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text(json.dumps(METRICS))
    files = {
        "pvc://datasets/sentiment/train.csv": "sentence,label,domain\na,positive,hotels\nb,negative,books\n",
        "pvc://datasets/sentiment/test.csv": "sentence,label,domain\nc,positive,books\nd,negative,hotels\n",
        "pvc://datasets/sentiment/test_out_of_domain.csv": "sentence,label,domain\ne,positive,travel\nf,negative,clothing\n",
    }
    paths = {}
    for uri, text in files.items():
        paths[uri] = tmp_path / uri.rsplit("/", 1)[1]
        paths[uri].write_text(text)
    return paths


def test_report_names_each_test_set_its_accuracy_rows_and_unseen_domains(tmp_path):
    paths = _files(tmp_path)
    text = report(FTJ, tmp_path / "out", paths.get)
    assert "Time taken: 1m5s from apply to completion" in text
    assert "Validation accuracy: 44.7% before fine-tuning -> 96.0% after" in text
    assert "Test accuracy, in_domain: 96.4% (250 held-out rows; from the 2 training domains)" in text
    assert (
        "Test accuracy, out_of_domain: 95.5% (200 held-out rows; domains never seen in training: clothing, travel)"
        in text
    )


def test_report_without_local_data_still_prints_the_accuracies(tmp_path):
    _files(tmp_path)
    text = report(FTJ, tmp_path / "out")
    assert "Test accuracy, in_domain: 96.4% (250 held-out rows)" in text
    assert "Test accuracy, out_of_domain: 95.5% (200 held-out rows)" in text


def test_a_test_set_the_trainer_did_not_score_gets_no_line(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text(json.dumps({"eval_accuracy_before": 0.5, "eval_accuracy": 0.9}))
    assert "Test accuracy" not in report(FTJ, tmp_path / "out")


def test_domains_need_a_domain_column_in_both_files(tmp_path):
    with_domain, without = tmp_path / "a.csv", tmp_path / "b.csv"
    with_domain.write_text("sentence,label,domain\nx,positive,films\n")
    without.write_text("sentence,label\nx,positive\n")
    assert held_out_domains(with_domain, with_domain) == (["films"], [])
    assert held_out_domains(with_domain, without) is None
    assert held_out_domains(None, with_domain) is None
