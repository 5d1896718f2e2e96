"""redact(): credentials a trainer may print never reach status.failure; ordinary log lines pass unchanged."""

from __future__ import annotations

import pytest
from finetune_operator.redaction import REDACTED, redact, tail

SECRETS = {
    "hf token": ("loading with hf_AbCdEfGhIjKlMnOpQrSt0123", "hf_AbCdEfGhIjKlMnOpQrSt0123"),
    "bearer header": ("headers={'Authorization': 'Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig'}", "eyJhbGciOiJIUzI1NiJ9"),
    "bare bearer": ("sent bearer abcdef0123456789xyz to the hub", "abcdef0123456789xyz"),
    "basic auth header": ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    "aws access key id": ("using key AKIAIOSFODNN7EXAMPLE for s3", "AKIAIOSFODNN7EXAMPLE"),
    "aws secret key alone": (
        "secret is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY here",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    "aws secret env": ("AWS_SECRET_ACCESS_KEY=abc123notbase64ish", "abc123notbase64ish"),
    "password=": ("connect(host=db, password=hunter2)", "hunter2"),
    "token:": ("token: s3cr3t-value", "s3cr3t-value"),
    "json secret name": ('{"hub_token": "abcdefg", "lr": 0.1}', "abcdefg"),
    "env dump": ("MY_SERVICE_API_KEY=zzz-111 PATH=/usr/bin", "zzz-111"),
    "cli flag": ("run.py --hub-token tok_998877 --epochs 3", "tok_998877"),
    "client secret": ("client_secret='q1w2e3r4'", "q1w2e3r4"),
    "url password": ("fetching https://user:pa55w0rd@minio.local/bucket", "pa55w0rd"),
}


@pytest.mark.parametrize("text,secret", SECRETS.values(), ids=SECRETS.keys())
def test_credentials_are_replaced(text, secret):
    cleaned = redact(text)
    assert secret not in cleaned
    assert REDACTED in cleaned


@pytest.mark.parametrize(
    "line",
    [
        "{'loss': 0.6931, 'learning_rate': 0.001, 'epoch': 0.5}",
        "tokenizer: bert-base-uncased, num_tokens=512, max_new_tokens: 64",
        "pad_token=[PAD] eos_token: </s>",
        'Traceback (most recent call last): File "/app/train.py", line 12',
        "saved checkpoint to /output/checkpoint-30 (sha 0123456789abcdef0123456789abcdef01234567)",
        "KeyError: 'label' is not a column of train.csv",
        "basic tokenization done",
    ],
)
def test_ordinary_training_output_is_unchanged(line):
    assert redact(line) == line


def test_redaction_keeps_the_label_so_the_line_still_explains_itself():
    assert redact("HF_TOKEN=hf_abcdefghijklmnop") == f"HF_TOKEN={REDACTED}"
    assert redact("password: hunter2, user: bob") == f"password: {REDACTED}, user: bob"


def test_redact_is_idempotent():
    once = redact("token=abc password=def hf_abcdefghijk")
    assert redact(once) == once


def test_tail_keeps_the_last_lines_within_the_byte_bound():
    text = "\n".join(f"line {i}" for i in range(100))
    assert tail(text, max_lines=3, max_bytes=1000) == "line 97\nline 98\nline 99"
    cut = tail(text, max_lines=40, max_bytes=20)
    assert len(cut.encode()) <= 20 and cut.endswith("line 99")


def test_tail_never_splits_a_multibyte_character():
    cut = tail("é" * 100, max_lines=1, max_bytes=7)
    assert cut == "ééé"


@pytest.mark.parametrize("line", ["a" * 100_000, "a_" * 50_000, ("x" * 63 + "=") * 2_000, "https://" + "a:" * 50_000])
def test_redaction_of_a_huge_line_takes_linear_time(line):
    # A trainer can print anything; the operator must not spin on it (this took 30 s with a quadratic pattern).
    import time

    started = time.perf_counter()
    redact(line)
    assert time.perf_counter() - started < 2.0
