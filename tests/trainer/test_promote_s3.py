"""Promotion of a search's best trial on s3://, against a real S3 API on loopback (the moto server,
tests/s3_server.py): what the promote Job does after a search whose output is in a bucket.

main() runs in-process with the environment a job's s3Credentials Secret gives the promote pod; buckets
are arranged and read with boto3 (s3_server), never with the code under test.
"""

from __future__ import annotations

import json
import uuid

import pytest
from finetune_trainer import storage
from finetune_trainer.errors import (
    EXIT_OK,
    EXIT_STORAGE_ACCESS_DENIED,
    EXIT_STORAGE_NOT_FOUND,
    EXIT_STORAGE_UNAVAILABLE,
)
from finetune_trainer.promote import main
from s3_server import Credentials, ThrottlingProxy, s3_server, use_only

# A trial's output as the trainer uploads it; checkpoints stay with the trial.
TRIAL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "merged/model.safetensors",
    "README.md",
    "metrics.json",
    "checkpoints/checkpoint-4/model.safetensors",
    "checkpoints/checkpoint-4/COMPLETE",
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch, tmp_path):
    """The promote pod's environment as the job's s3Credentials Secret makes it, and nothing of this machine's."""
    use_only(s3, monkeypatch, tmp_path)
    monkeypatch.setattr(storage, "sleep", lambda _seconds: None)  # backoff costs no time here
    return s3


@pytest.fixture
def search_output(s3_env):
    """A bucket holding a search's output folder: three trials, and an older model's objects at the top."""
    s3 = s3_env
    bucket = s3.make_bucket(f"out-{uuid.uuid4().hex[:10]}")
    client = s3.client()
    for index in range(3):
        for name in TRIAL_FILES:
            client.put_object(Bucket=bucket, Key=f"job/trials/job-t{index}/{name}", Body=f"t{index}:{name}".encode())
    client.put_object(Bucket=bucket, Key="job/config.json", Body=b"old:config.json")
    client.put_object(Bucket=bucket, Key="job/keep-me.txt", Body=b"a user's file")
    return bucket


def args(bucket: str, best: int, removes=(0, 1, 2)) -> list[str]:
    base = f"s3://{bucket}/job"
    argv = ["--best", f"{base}/trials/job-t{best}", "--output", base]
    for index in removes:
        argv += ["--remove", f"{base}/trials/job-t{index}"]
    return argv


def reported(termination_log) -> dict:
    return json.loads(termination_log.read_text())


def test_the_best_trials_model_is_moved_into_the_output_and_the_trials_are_removed(
    s3_env, search_output, termination_log
):
    s3, bucket = s3_env, search_output
    assert main(args(bucket, 1)) == EXIT_OK, termination_log.read_text()
    assert s3.keys(bucket) == sorted(
        [f"job/{name}" for name in TRIAL_FILES if not name.startswith("checkpoints/")] + ["job/keep-me.txt"]
    )
    for name in ("config.json", "model.safetensors", "merged/model.safetensors", "metrics.json"):
        assert s3.read(bucket, f"job/{name}") == f"t1:{name}".encode()
    # Objects the best model does not have are not the promotion's to delete.
    assert s3.read(bucket, "job/keep-me.txt") == b"a user's file"
    message = reported(termination_log)
    assert message["reason"] == "Completed"
    assert "moved 6 entries, removed 3 folders" in message["message"], message

    # The promote Job may run again (a retry after its pod was lost): nothing left to move, the model stays.
    assert main(args(bucket, 1)) == EXIT_OK, termination_log.read_text()
    assert s3.read(bucket, "job/config.json") == b"t1:config.json"
    assert "moved 0 entries, removed 0 folders" in reported(termination_log)["message"]


def test_keeping_trial_outputs_leaves_every_other_trial_and_the_best_ones_checkpoints(
    s3_env, search_output, termination_log
):
    s3, bucket = s3_env, search_output
    assert main(args(bucket, 2, removes=())) == EXIT_OK, termination_log.read_text()
    assert s3.read(bucket, "job/config.json") == b"t2:config.json"
    assert s3.keys(bucket, "job/trials/job-t2/") == [
        "job/trials/job-t2/checkpoints/checkpoint-4/COMPLETE",
        "job/trials/job-t2/checkpoints/checkpoint-4/model.safetensors",
    ]
    assert len(s3.keys(bucket, "job/trials/job-t0/")) == len(TRIAL_FILES)


def test_a_throttled_copy_fails_as_unavailable_loses_nothing_and_a_retry_converges(
    s3_env, search_output, termination_log, monkeypatch
):
    """The store throttles every copy of metrics.json (the last object written): the attempt ends as
    StorageUnavailable (exit 8, which the Job retries) with the trial untouched; the retry completes it."""
    s3, bucket = s3_env, search_output

    def throttle_metrics_copy(method: str, path: str, _number: int) -> bool:
        return method == "PUT" and path.split("?")[0] == f"/{bucket}/job/metrics.json"

    with ThrottlingProxy(s3.endpoint, throttle_metrics_copy) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        assert main(args(bucket, 0)) == EXIT_STORAGE_UNAVAILABLE
        copies = [seen.path.split("?")[0] for seen in proxy.seen if seen.method == "PUT"]
    failure = reported(termination_log)
    assert failure["reason"] == "StorageUnavailable"
    assert f"s3://{bucket}/job/metrics.json" in failure["message"] and "SlowDown" in failure["message"], failure
    # Bounded: botocore's 3 tries per request, 5 tries of the object by the trainer; nothing after them.
    assert proxy.throttled() == storage.REQUEST_ATTEMPTS * storage.ATTEMPTS
    assert copies[-1] == f"/{bucket}/job/metrics.json"
    # The model card was copied before metrics.json, everything else before both.
    first_of = {path: copies.index(path) for path in set(copies)}
    assert first_of[f"/{bucket}/job/README.md"] == max(v for k, v in first_of.items() if not k.endswith("metrics.json"))
    # Nothing was deleted: the trial still has every object, the older model's marker is not the new one's.
    assert len(s3.keys(bucket, "job/trials/job-t0/")) == len(TRIAL_FILES)
    assert s3.keys(bucket, "job/metrics.json") == []

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    assert main(args(bucket, 0)) == EXIT_OK, termination_log.read_text()
    assert s3.read(bucket, "job/metrics.json") == b"t0:metrics.json"
    assert s3.keys(bucket, "job/trials/") == []


def test_a_missing_bucket_is_not_found_naming_it(s3_env, termination_log):
    bucket = f"gone-{uuid.uuid4().hex[:10]}"
    assert main(args(bucket, 0)) == EXIT_STORAGE_NOT_FOUND
    failure = reported(termination_log)
    assert failure["reason"] == "StorageNotFound"
    assert f"s3://{bucket}/job/trials/job-t0" in failure["message"] and "NoSuchBucket" in failure["message"]


def test_a_best_trial_without_a_model_and_an_output_without_one_is_invalid_input(s3_env, termination_log):
    bucket = s3_env.make_bucket(f"empty-{uuid.uuid4().hex[:10]}")
    assert main(args(bucket, 0)) == 3
    failure = reported(termination_log)
    assert failure["reason"] == "InvalidData" and "nothing to promote" in failure["message"], failure


def test_a_remove_folder_holding_the_output_is_refused_before_anything_moves(s3_env, search_output, termination_log):
    s3, bucket = s3_env, search_output
    argv = [*args(bucket, 1, removes=()), "--remove", f"s3://{bucket}"]
    assert main(argv) == 3
    assert "would delete the output" in reported(termination_log)["message"]
    assert len(s3.keys(bucket, "job/trials/job-t1/")) == len(TRIAL_FILES)


def test_wrong_keys_are_access_denied_naming_the_uri_and_code_but_not_the_key(
    s3_env, search_output, termination_log, monkeypatch
):
    s3, bucket = s3_env, search_output
    s3.require_auth()
    try:
        wrong = Credentials("AKIAWRONGKEY00000000", "not-the-secret-of-any-key")
        for name, value in wrong.env().items():
            monkeypatch.setenv(name, value)
        assert main(args(bucket, 1)) == EXIT_STORAGE_ACCESS_DENIED
    finally:
        s3.allow_anyone()
    failure = reported(termination_log)
    assert failure["reason"] == "StorageAccessDenied"
    assert f"s3://{bucket}/job/trials/job-t1" in failure["message"] and "InvalidAccessKeyId" in failure["message"]
    assert wrong.access_key not in failure["message"] and wrong.secret_key not in failure["message"]
    assert len(s3.keys(bucket, "job/trials/")) == 3 * len(TRIAL_FILES)
