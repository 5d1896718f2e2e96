"""s3:// models, data and outputs against a real S3 API on loopback (the moto server, tests/s3_server.py),
and the trainer's storage failures: which class, which exit code, what the message says, how often it retries.

Nothing here mocks s3fs or botocore: the trainer's own client talks HTTP to moto, or to a throttling proxy in
front of it, or to a closed port. Only the backoff's sleep is recorded instead of slept.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from finetune_trainer import main, storage
from finetune_trainer.errors import (
    EXIT_HUB_UNREACHABLE,
    EXIT_OK,
    EXIT_STORAGE_ACCESS_DENIED,
    EXIT_STORAGE_NOT_FOUND,
    EXIT_STORAGE_UNAVAILABLE,
    InvalidData,
    StorageAccessDenied,
    StorageNotFound,
    StorageRequestRejected,
    StorageUnavailable,
)
from finetune_trainer.sources import fetch
from s3_server import Credentials, ThrottlingProxy, free_port, s3_server, use_only
from trainer_data import sentiment_rows, write_csv

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch, tmp_path):
    """The trainer's environment as a job's s3Credentials Secret makes it, and nothing of this machine's."""
    use_only(s3, monkeypatch, tmp_path)
    # The trainer's download cache and output staging go under tempfile's folder: this test's own.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return s3


@pytest.fixture
def backoff(monkeypatch):
    """The trainer's backoff delays, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(storage, "sleep", slept.append)
    return slept


@pytest.fixture
def trainer_log():
    """Everything the trainer logs, tracebacks included (its logger does not propagate to pytest's)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record))

    handler = Keep()
    logging.getLogger("finetune_trainer").addHandler(handler)
    yield lines
    logging.getLogger("finetune_trainer").removeHandler(handler)


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def closed_port() -> int:
    port = free_port()
    with socket.socket() as s:  # nothing listens there once free_port closed it; make sure of it
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


def _config(model, train, validation, output, **extra) -> dict:
    return {
        "task": "text-classification",
        "model_uri": model,
        "train_uri": train,
        "validation_uri": validation,
        "output_uri": output,
        "max_steps": 10,
        "batch_size": 16,
        "learning_rate": 5e-3,
        "logging_steps": 5,
        "checkpoint_steps": 5,
        "max_seq_length": 16,
        **extra,
    }


def _reported(termination_log) -> dict:
    return json.loads(termination_log.read_text())


# --- the trainer's path: model, data and output on s3:// ----------------------------------------------


def test_a_job_with_model_data_and_output_on_s3_succeeds_and_its_output_lands_in_the_bucket(
    s3_env, tiny_bert, tmp_path, write_config, termination_log
):
    s3 = s3_env
    models, data, outputs = (
        s3.make_bucket(unique("models")),
        s3.make_bucket(unique("data")),
        s3.make_bucket(unique("out")),
    )
    model_uri = s3.put_tree(tiny_bert, models, "base/tiny-bert")
    # The training data is a folder of two CSV files; the validation data one file.
    rows = sentiment_rows(96, seed=1)
    s3.put_file(write_csv(tmp_path / "part-1.csv", rows[:48]), data, "sentiment/train/part-1.csv")
    s3.put_file(write_csv(tmp_path / "part-2.csv", rows[48:]), data, "sentiment/train/part-2.csv")
    validation = s3.put_file(
        write_csv(tmp_path / "validation.csv", sentiment_rows(32, seed=2)), data, "sentiment/v.csv"
    )
    # Something already in the output folder: an upload adds and replaces, never deletes.
    s3.client().put_object(Bucket=outputs, Key="runs/first/notes.txt", Body=b"kept")

    code = main(
        write_config(**_config(model_uri, f"s3://{data}/sentiment/train", validation, f"s3://{outputs}/runs/first"))
    )

    assert code == EXIT_OK, termination_log.read_text()
    assert _reported(termination_log)["reason"] == "Completed"
    keys = set(s3.keys(outputs, "runs/first/"))
    expected = {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "README.md", "notes.txt"}
    assert {f"runs/first/{name}" for name in expected} <= keys
    assert {"runs/first/checkpoints/checkpoint-5/COMPLETE", "runs/first/checkpoints/checkpoint-10/COMPLETE"} <= keys
    metrics = json.loads(s3.read(outputs, "runs/first/metrics.json"))
    assert metrics["global_step"] == 10
    assert metrics["data"]["train_rows"] == 96 and metrics["data"]["validation_rows"] == 32
    assert "eval_accuracy" in metrics
    assert f"base_model: {model_uri}" in s3.read(outputs, "runs/first/README.md").decode()
    assert s3.read(outputs, "runs/first/notes.txt") == b"kept"


def test_a_missing_model_bucket_fails_at_once_as_storage_not_found_naming_uri_and_code(
    s3_env, tiny_bert, sentiment_files, write_config, termination_log, backoff, tmp_path
):
    missing = f"s3://{unique('no-such-bucket')}/base/tiny-bert"
    train, validation = sentiment_files
    code = main(write_config(**_config(missing, train, validation, str(tmp_path / "out"))))
    assert code == EXIT_STORAGE_NOT_FOUND
    reported = _reported(termination_log)
    assert reported["reason"] == "StorageNotFound"
    assert missing in reported["message"] and "NoSuchBucket" in reported["message"]
    assert reported["message"].startswith("model ")
    assert backoff == [], "a missing bucket is not retried"


def test_a_missing_data_key_fails_at_once_as_storage_not_found_naming_uri_and_code(
    s3_env, tiny_bert, write_config, termination_log, backoff, tmp_path
):
    bucket = s3_env.make_bucket(unique("data"))
    s3_env.client().put_object(Bucket=bucket, Key="sentiment/train.csv", Body=b"text,label\n")
    missing = f"s3://{bucket}/sentiment/Train.csv"  # keys are case-sensitive
    code = main(write_config(**_config(tiny_bert, missing, None, str(tmp_path / "out"))))
    assert code == EXIT_STORAGE_NOT_FOUND
    reported = _reported(termination_log)
    assert reported["reason"] == "StorageNotFound"
    assert missing in reported["message"] and "NoSuchKey" in reported["message"]
    assert reported["message"].startswith("train data ")
    assert backoff == []


@pytest.mark.parametrize(
    "credentials, code, action",
    [
        (
            lambda s3, admin: Credentials("AKIAUNKNOWNKEY000000", "not-the-secret-of-anyone"),
            "InvalidAccessKeyId",
            "listing",
        ),
        (
            lambda s3, admin: Credentials(admin.access_key, "a-wrong-secret-for-a-real-key"),
            "SignatureDoesNotMatch",
            "listing",
        ),
        # Listing is refused, so the trainer tries the key as one object (a GetObject-only policy): refused too.
        (lambda s3, admin: s3.user(admin), "AccessDenied", "downloading"),
    ],
    ids=["unknown-key", "wrong-secret", "no-permission"],
)
def test_bad_credentials_fail_at_once_as_storage_access_denied_without_showing_them(
    s3_env, tiny_bert, sentiment_files, write_config, termination_log, backoff, trainer_log, tmp_path, monkeypatch,
    credentials, code, action,
):  # fmt: skip
    s3 = s3_env
    bucket = s3.make_bucket(unique("models"))
    model_uri = s3.put_tree(tiny_bert, bucket, "tiny-bert")
    admin = s3.require_auth()
    try:
        given = credentials(s3, admin)
        for name, value in given.env().items():
            monkeypatch.setenv(name, value)
        train, validation = sentiment_files
        exit_code = main(write_config(**_config(model_uri, train, validation, str(tmp_path / "out"))))
    finally:
        s3.allow_anyone()
    assert exit_code == EXIT_STORAGE_ACCESS_DENIED
    reported = _reported(termination_log)
    assert reported["reason"] == "StorageAccessDenied"
    assert model_uri in reported["message"] and f"while {action} ({code}" in reported["message"]
    everything = termination_log.read_text() + "\n".join(trainer_log)
    assert given.secret_key not in everything and given.access_key not in everything
    assert backoff == [], "denied access is not retried"


def test_an_unreachable_endpoint_is_retried_with_backoff_then_fails_as_storage_unavailable(
    s3_env, tiny_bert, write_config, termination_log, backoff, tmp_path, monkeypatch
):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the standard variable: botocore's own retries off, ours remain
    started = time.monotonic()
    code = main(write_config(**_config(tiny_bert, "s3://some-data/train.csv", None, str(tmp_path / "out"))))
    assert code == EXIT_STORAGE_UNAVAILABLE
    assert time.monotonic() - started < 30
    reported = _reported(termination_log)
    assert reported["reason"] == "StorageUnavailable"
    assert "s3://some-data/train.csv" in reported["message"] and endpoint in reported["message"]
    assert (
        "EndpointConnectionError" in reported["message"] and f"after {storage.ATTEMPTS} attempts" in reported["message"]
    )
    # Doubling from 2 s (each jittered down to half at most), capped: 2, 4, 8, 16 s.
    assert len(backoff) == storage.ATTEMPTS - 1
    for attempt, delay in enumerate(backoff, start=1):
        ceiling = min(storage.MAX_DELAY_SECONDS, storage.FIRST_DELAY_SECONDS * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling


# --- throttling: every request counted ----------------------------------------------------------------


def test_a_short_burst_of_slow_down_is_absorbed_by_request_retries(s3_env, backoff, tmp_path, monkeypatch):
    bucket = s3_env.make_bucket(unique("data"))
    s3_env.client().put_object(Bucket=bucket, Key="train.csv", Body=b"text,label\na,b\n")
    with ThrottlingProxy(s3_env.endpoint, lambda _method, _path, n: n < 2) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        local = storage.download(f"s3://{bucket}/train.csv", str(tmp_path / "cache"))
    assert Path(local).read_bytes() == b"text,label\na,b\n"
    assert proxy.throttled() == 2 and backoff == [], "botocore's standard retries took the two SlowDowns"


@pytest.mark.parametrize(
    "max_attempts, requests", [(None, storage.ATTEMPTS * storage.REQUEST_ATTEMPTS), ("2", storage.ATTEMPTS * 2)]
)
def test_throttling_that_does_not_stop_ends_as_storage_unavailable_after_a_bounded_number_of_requests(
    s3_env, backoff, tmp_path, monkeypatch, max_attempts, requests
):
    if max_attempts:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", max_attempts)
    with ThrottlingProxy(s3_env.endpoint, lambda *_: True) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        with pytest.raises(StorageUnavailable) as failure:
            storage.download("s3://some-bucket/model", str(tmp_path / "cache"), what="model")
    assert len(proxy.seen) == requests
    assert failure.value.code == "SlowDown" and failure.value.uri == "s3://some-bucket/model"
    assert "model s3://some-bucket/model" in str(failure.value) and "SlowDown" in str(failure.value)
    assert len(backoff) == storage.ATTEMPTS - 1


def test_an_upload_cut_short_by_throttling_keeps_what_it_wrote_and_a_second_upload_completes_it(
    s3_env, backoff, tmp_path, monkeypatch
):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries would only make it slower
    bucket = s3_env.make_bucket(unique("out"))
    s3_env.client().put_object(Bucket=bucket, Key="run/earlier.txt", Body=b"from before")
    folder = tmp_path / "checkpoint"
    for name in ("a.bin", "b.bin", "c.bin", "COMPLETE"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    puts = {"n": 0}

    def throttle_after_two_puts(method, _path, _n):
        if method != "PUT":
            return False
        puts["n"] += 1
        return puts["n"] > 2

    with ThrottlingProxy(s3_env.endpoint, throttle_after_two_puts) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        with pytest.raises(StorageUnavailable):
            storage.upload_tree(str(folder), f"s3://{bucket}/run", last=["COMPLETE"])
    # Nothing written before is gone, and the marker that says "complete" was not written.
    assert s3_env.keys(bucket) == ["run/a.bin", "run/b.bin", "run/earlier.txt"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    written = storage.upload_tree(str(folder), f"s3://{bucket}/run", last=["COMPLETE"])
    assert written == ["run/a.bin", "run/b.bin", "run/c.bin", "run/COMPLETE"]
    assert s3_env.keys(bucket) == ["run/COMPLETE", "run/a.bin", "run/b.bin", "run/c.bin", "run/earlier.txt"]


# --- downloads ------------------------------------------------------------------------------------------


def test_a_folder_downloads_whole_with_its_layout_and_nothing_from_keys_that_merely_share_its_prefix(s3_env, tmp_path):
    bucket = s3_env.make_bucket(unique("models"))
    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="model/config.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key="model/weights/part-1.bin", Body=b"1" * 1000)
    client.put_object(Bucket=bucket, Key="model/weights/", Body=b"")  # a console-made "folder" marker
    client.put_object(Bucket=bucket, Key="model-v2/config.json", Body=b"{v2}")
    client.put_object(Bucket=bucket, Key="model.txt", Body=b"not the model")
    local = Path(storage.download(f"s3://{bucket}/model", str(tmp_path / "cache"), what="model"))
    assert local.name == "model"
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "config.json",
        "weights/part-1.bin",
    ]
    assert (local / "weights" / "part-1.bin").read_bytes() == b"1" * 1000
    single = Path(storage.download(f"s3://{bucket}/model.txt", str(tmp_path / "cache")))
    assert single.name == "model.txt" and single.read_bytes() == b"not the model"


def test_a_cached_copy_is_used_until_the_object_changes(s3_env, tmp_path, monkeypatch):
    bucket = s3_env.make_bucket(unique("data"))
    s3_env.client().put_object(Bucket=bucket, Key="train.csv", Body=b"first")
    cache = str(tmp_path / "cache")
    with ThrottlingProxy(s3_env.endpoint, lambda *_: False) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        first = storage.download(f"s3://{bucket}/train.csv", cache)
        gets = sum(1 for r in proxy.seen if r.method == "GET" and "list-type" not in r.path)
        again = storage.download(f"s3://{bucket}/train.csv", cache)
        assert sum(1 for r in proxy.seen if r.method == "GET" and "list-type" not in r.path) == gets == 1
    assert again == first
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    s3_env.client().put_object(Bucket=bucket, Key="train.csv", Body=b"second")
    changed = storage.download(f"s3://{bucket}/train.csv", cache)
    assert changed != first and Path(changed).read_bytes() == b"second" and Path(first).read_bytes() == b"first"


def test_ranks_downloading_the_same_model_at_once_share_one_whole_copy(s3_env, tmp_path):
    bucket = s3_env.make_bucket(unique("models"))
    for i in range(6):
        s3_env.client().put_object(Bucket=bucket, Key=f"model/shard-{i}.bin", Body=bytes([i]) * 50_000)
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda _: storage.download(f"s3://{bucket}/model", str(cache)), range(3)))
    assert len(set(paths)) == 1
    assert sorted(os.listdir(paths[0])) == [f"shard-{i}.bin" for i in range(6)]
    assert all(Path(paths[0], f"shard-{i}.bin").read_bytes() == bytes([i]) * 50_000 for i in range(6))
    assert [p.name for p in cache.iterdir() if ".partial-" in p.name] == [], "no half-made copies left behind"


def test_a_key_readable_without_a_listing_permission_is_still_downloaded(s3_env, tmp_path, monkeypatch):
    s3 = s3_env
    bucket = s3.make_bucket(unique("data"))
    s3.client().put_object(Bucket=bucket, Key="train.csv", Body=b"text,label\n")
    admin = s3.require_auth()
    try:
        reader, nobody = s3.user(admin, ("s3:GetObject",)), s3.user(admin)
        for name, value in reader.env().items():
            monkeypatch.setenv(name, value)
        local = storage.download(f"s3://{bucket}/train.csv", str(tmp_path / "cache"))
        assert Path(local).read_bytes() == b"text,label\n"
        with pytest.raises(StorageNotFound, match="NoSuchKey"):  # moto tells a reader the key is missing
            storage.download(f"s3://{bucket}/missing.csv", str(tmp_path / "cache"))
        for name, value in nobody.env().items():
            monkeypatch.setenv(name, value)
        with pytest.raises(StorageAccessDenied) as denied:
            storage.download(f"s3://{bucket}/train.csv", str(tmp_path / "cache"))
    finally:
        s3.allow_anyone()
    # Whoever may not list a bucket gets AccessDenied from S3 for a missing key too: the message says so.
    assert denied.value.code == "AccessDenied" and f"s3://{bucket}/train.csv" in str(denied.value)
    assert "listing was refused as well (AccessDenied)" in str(denied.value)


def test_the_s3_specific_endpoint_variable_wins_over_the_general_one(s3_env, tmp_path, monkeypatch):
    bucket = s3_env.make_bucket(unique("data"))
    s3_env.client().put_object(Bucket=bucket, Key="x.csv", Body=b"x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env.endpoint)
    assert Path(storage.download(f"s3://{bucket}/x.csv", str(tmp_path / "cache"))).read_bytes() == b"x"


def test_no_credentials_at_all_is_access_denied_naming_the_secret_to_fill(s3_env, tmp_path, monkeypatch, backoff):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageAccessDenied) as failure:
        storage.download("s3://some-bucket/model", str(tmp_path / "cache"), what="model")
    assert failure.value.code == "NoCredentials" and "spec.secrets.s3Credentials" in str(failure.value)
    assert backoff == []


# --- the API that checkpoint streaming builds on --------------------------------------------------------


def test_list_and_delete_a_folder_without_touching_folders_whose_names_extend_it(s3_env, tmp_path):
    bucket = s3_env.make_bucket(unique("out"))
    for key in ("ckpt/checkpoint-1/w.bin", "ckpt/checkpoint-1/COMPLETE", "ckpt/checkpoint-10/w.bin"):
        s3_env.client().put_object(Bucket=bucket, Key=key, Body=b"12345")
    assert storage.list_files(f"s3://{bucket}/ckpt") == {
        "checkpoint-1/COMPLETE": 5,
        "checkpoint-1/w.bin": 5,
        "checkpoint-10/w.bin": 5,
    }
    assert storage.list_files(f"s3://{bucket}/nothing-here") == {}
    assert storage.delete_tree(f"s3://{bucket}/ckpt/checkpoint-1") == 2
    assert s3_env.keys(bucket) == ["ckpt/checkpoint-10/w.bin"]
    with pytest.raises(StorageNotFound, match="NoSuchBucket"):
        storage.list_files(f"s3://{unique('gone')}/ckpt")


def test_check_location_fails_early_for_a_missing_bucket_and_passes_for_an_empty_prefix(s3_env):
    bucket = s3_env.make_bucket(unique("out"))
    storage.check_location(f"s3://{bucket}/runs/new")
    with pytest.raises(StorageNotFound) as failure:
        storage.check_location(f"s3://{unique('gone')}/runs/new", what="output")
    assert failure.value.code == "NoSuchBucket" and str(failure.value).startswith("output s3://")


# --- hf:// when the Hub cannot be reached -------------------------------------------------------------


def test_an_uncached_hub_model_with_hf_hub_offline_fails_at_once_as_hub_unreachable(
    sentiment_files, write_config, termination_log, tmp_path
):
    # conftest.py sets HF_HUB_OFFLINE=1 before huggingface_hub is imported, as the sandbox does for pods.
    model = f"hf://finetune-tests/never-cached-{uuid.uuid4().hex[:8]}"
    train, validation = sentiment_files
    started = time.monotonic()
    code = main(write_config(**_config(model, train, validation, str(tmp_path / "out"))))
    assert code == EXIT_HUB_UNREACHABLE
    assert time.monotonic() - started < 10
    reported = _reported(termination_log)
    assert reported["reason"] == "HubUnreachable"
    message = reported["message"]
    assert model in message and "HF_HUB_OFFLINE is set" in message
    assert "pvc://" in message and "s3://" in message and "HF_ENDPOINT" in message


def test_a_hub_that_refuses_connections_fails_the_trainer_process_at_once_as_hub_unreachable(tmp_path, tiny_bert):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    train = write_csv(tmp_path / "train.csv", sentiment_rows(16, seed=1))
    config = tmp_path / "config.json"
    model = "hf://finetune-tests/never-cached-model"
    config.write_text(json.dumps(_config(model, train, None, str(tmp_path / "out"))))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf-home"),
        "FINETUNE_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "FINETUNE_METRICS_PORT": "0",
        "PYTHONPATH": str(ROOT / "trainer_image"),
    }
    finished = subprocess.run(
        [sys.executable, "-m", "finetune_trainer", str(config)], env=env, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == EXIT_HUB_UNREACHABLE, finished.stderr[-3000:]
    reported = json.loads((tmp_path / "termination-log").read_text())
    assert reported["reason"] == "HubUnreachable"
    assert model in reported["message"] and f"{endpoint} did not answer" in reported["message"]
    assert "ConnectError" in reported["message"]


# --- pure parts -------------------------------------------------------------------------------------------


def _client_error(code: str, status: int, message: str = "") -> ClientError:
    # The shape botocore's parser gives a ClientError (its `response`), built as botocore builds it.
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    "code, status, kind",
    [
        ("AccessDenied", 403, StorageAccessDenied),
        ("InvalidAccessKeyId", 403, StorageAccessDenied),
        ("SignatureDoesNotMatch", 403, StorageAccessDenied),
        ("ExpiredToken", 400, StorageAccessDenied),
        ("NoSuchBucket", 404, StorageNotFound),
        ("NoSuchKey", 404, StorageNotFound),
        ("SlowDown", 503, StorageUnavailable),
        ("InternalError", 500, StorageUnavailable),
        ("RequestTimeout", 400, StorageUnavailable),
        ("XMinioServerBusy", 503, StorageUnavailable),  # not listed: its status decides
        ("TooManyRequests", 429, StorageUnavailable),
        ("PermanentRedirect", 301, StorageRequestRejected),
        ("AuthorizationHeaderMalformed", 400, StorageRequestRejected),
        ("InvalidObjectState", 403, StorageAccessDenied),  # a 403 is a refusal whatever its code
    ],
)
def test_each_store_error_is_the_failure_its_code_or_status_means(code, status, kind, tmp_path):
    failure = storage.storage_failure(
        _client_error(code, status), storage.S3Location("bucket", "key"), what="model", action="downloading"
    )
    assert type(failure) is kind
    assert failure.code == code and failure.uri == "s3://bucket/key"
    assert str(failure).startswith("model s3://bucket/key: ") and code in str(failure)


def test_a_store_message_that_echoes_a_credential_is_scrubbed(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")
    error = _client_error("SignatureDoesNotMatch", 403, "expected s3cr3t-value-123 in the StringToSign")
    failure = storage.storage_failure(error, storage.S3Location("b", "k"), what="output", action="uploading")
    assert "s3cr3t-value-123" not in str(failure) and "<AWS_SECRET_ACCESS_KEY>" in str(failure)


def test_a_local_error_is_no_storage_failure():
    disk_full = OSError(28, "No space left on device")
    assert storage.storage_failure(disk_full, storage.S3Location("b", "k"), what="data", action="downloading") is None


@pytest.mark.parametrize(
    "uri, fragment",
    [("s3://Models_Bucket/x", "'Models_Bucket' is not an S3 bucket name"), ("s3:///x", "'' is not an S3 bucket name")],
)
def test_a_malformed_s3_uri_is_invalid_data_naming_it_and_a_valid_example(uri, fragment):
    with pytest.raises(InvalidData) as failure:
        fetch(uri, what="model")
    assert str(failure.value).startswith(f"model {uri}: ") and fragment in str(failure.value)
    assert "s3://my-models/bert-base" in str(failure.value)


def test_an_endpoint_that_is_no_url_is_invalid_data_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "minio.minio.svc:9000")
    with pytest.raises(InvalidData, match=r"AWS_ENDPOINT_URL 'minio.minio.svc:9000' is not an http\(s\) URL"):
        storage.download("s3://bucket/key", str(tmp_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://user:password@minio:9000")
    assert storage.endpoint_description() == "http://minio:9000"


@pytest.mark.parametrize("key", ["model/../etc/passwd", "model/a//b", "model/./x"])
def test_an_object_key_that_would_leave_its_folder_is_refused(key):
    with pytest.raises(InvalidData, match="cannot be a file name below a folder"):
        storage._relative(storage.S3Location("bucket", "model"), key, "model")
