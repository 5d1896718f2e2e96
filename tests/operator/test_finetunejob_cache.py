"""The operator's copy of each FineTuneJob, kept as JSON text: the newest version wins, every read is the
reader's own copy, and it costs a fraction of the dicts it replaces."""

from __future__ import annotations

import copy
import sys
from typing import Any

from finetune_operator.kube.finetunejob_cache import FineTuneJobCache

KEY = ("team-a", "ft")


def finetunejob(version: str, uid: str = "uid-1", phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "ft", "namespace": "team-a", "uid": uid, "resourceVersion": version, "generation": 1},
        "spec": {"task": "text-classification", "model": {"source": "pvc://models/m"}},
        "status": {
            "phase": phase,
            "progress": {"step": 40, "totalSteps": 100, "loss": 0.41, "etaSeconds": 93.5},
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": t,
                    "message": "é " * 10,
                    "lastTransitionTime": "2026-12-07T10:00:00Z",
                }
                for t in ("Created", "Running", "Progressing")
            ],
        },
    }


def test_a_newer_version_replaces_an_older_one_and_an_older_one_is_ignored():
    cache = FineTuneJobCache()
    first = finetunejob("10")
    assert cache.remember(first) is first  # kept: the caller's own to use
    newer = finetunejob("12", phase="Succeeded")
    cache.remember(newer)
    late = finetunejob("11", phase="Failed")  # a watch event older than our own write's answer
    assert cache.remember(late) == newer
    assert cache[KEY]["status"]["phase"] == "Succeeded"


def test_a_recreated_job_replaces_the_old_one_whatever_its_version():
    cache = FineTuneJobCache()
    cache.remember(finetunejob("50"))
    recreated = finetunejob("3", uid="uid-2", phase="Pending")
    assert cache.remember(recreated) is recreated
    assert cache[KEY]["metadata"]["uid"] == "uid-2"


def test_every_read_is_a_copy_the_reader_may_change():
    cache = FineTuneJobCache()
    cache.remember(finetunejob("10"))
    mine = cache.get(KEY)
    assert mine is not None
    mine["status"]["phase"] = "Failed"
    mine["status"]["conditions"].clear()
    assert cache[KEY] == finetunejob("10")  # unicode messages too


def test_unknown_and_forgotten_jobs_are_absent():
    cache = FineTuneJobCache()
    assert cache.get(KEY) is None and KEY not in cache and len(cache) == 0
    cache.remember(finetunejob("10"))
    assert KEY in cache and len(cache) == 1
    cache.forget(KEY)
    assert cache.get(KEY) is None and len(cache) == 0


def deep_size(obj: Any) -> int:
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(deep_size(k) + deep_size(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sys.getsizeof(obj) + sum(deep_size(v) for v in obj)
    return sys.getsizeof(obj)


def test_the_text_is_several_times_smaller_than_the_dicts():
    cache = FineTuneJobCache()
    job = finetunejob("10")
    cache.remember(copy.deepcopy(job))
    text = cache._entries[KEY].text
    assert deep_size(job) > 3 * len(text), (deep_size(job), len(text))
