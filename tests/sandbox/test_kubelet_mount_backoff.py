"""The kubelet's retry back-off for failed volume mounts and its event bodies (pure parts, no clock, no server).

Upstream: pkg/util/goroutinemap/exponentialbackoff (initialDurationBeforeRetry 500 ms, doubling, capped at
maxDurationBeforeRetry 2m2s), pkg/kubelet/volumemanager (podAttachAndMountTimeout 2m3s), pkg/kubelet
(backOffPeriod 10 s, jitter 0.5), client-go tools/record (repeats aggregated by count).
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from finetune_sandbox.kubelet.events import aggregation_key, container_field_path, event_body, involved_pod
from finetune_sandbox.kubelet.mount_backoff import (
    INITIAL_DURATION_BEFORE_RETRY,
    MAX_DURATION_BEFORE_RETRY,
    POD_ATTACH_AND_MOUNT_TIMEOUT,
    SYNC_BACKOFF_PERIOD,
    ExponentialBackoff,
    MountBackoffs,
    attempt_times,
    duration_before_retry,
    mount_time,
    sync_backoff,
)

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def test_the_upstream_constants():
    assert INITIAL_DURATION_BEFORE_RETRY == 0.5
    assert MAX_DURATION_BEFORE_RETRY == 122.0  # 2m2s
    assert POD_ATTACH_AND_MOUNT_TIMEOUT == 123.0  # 2m3s
    assert SYNC_BACKOFF_PERIOD == 10.0


def test_the_wait_after_each_failure_doubles_from_half_a_second_up_to_two_minutes_two_seconds():
    waits = [duration_before_retry(failures) for failures in range(12)]
    assert waits == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 122.0, 122.0, 122.0]
    assert duration_before_retry(10_000) == 122.0  # no overflow, still capped


def test_attempts_follow_the_schedule_when_each_one_fails():
    assert attempt_times(10) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 63.5, 127.5, 249.5]
    gaps = [later - earlier for earlier, later in zip(attempt_times(14), attempt_times(14)[1:])]
    assert gaps[-3:] == [122.0, 122.0, 122.0]


@pytest.mark.parametrize(
    ("ready_at", "mounted_at"),
    [(0.0, 0.0), (0.2, 0.5), (0.5, 0.5), (1.6, 3.5), (3.5, 3.5), (100.0, 127.5), (250.0, 371.5)],
)
def test_a_mount_succeeds_at_the_first_attempt_after_its_source_exists(ready_at, mounted_at):
    assert mount_time(ready_at) == mounted_at
    # Never sooner than the source, never later than one back-off interval after it.
    assert ready_at <= mounted_at <= ready_at + MAX_DURATION_BEFORE_RETRY


def test_the_schedule_scales_with_other_settings():
    assert attempt_times(4, initial=0.1, maximum=0.3) == pytest.approx([0.0, 0.1, 0.3, 0.6])
    assert mount_time(0.25, initial=0.1, maximum=0.3) == pytest.approx(0.3)


def test_one_operation_refuses_retries_until_its_back_off_expires():
    backoff = ExponentialBackoff()
    assert backoff.safe_to_retry(0.0) and backoff.duration == 0.0
    backoff.update('configmap "cfg" not found', now=10.0)
    assert (backoff.duration, backoff.retry_at) == (0.5, 10.5)
    assert not backoff.safe_to_retry(10.4)
    assert backoff.safe_to_retry(10.5)
    backoff.update('configmap "cfg" not found', now=10.5)
    assert (backoff.duration, backoff.retry_at) == (1.0, 11.5)
    assert backoff.last_error == 'configmap "cfg" not found'


def test_each_volume_backs_off_on_its_own_and_a_success_forgets_its_back_off():
    backoffs = MountBackoffs()
    backoffs.failed("config", "a", now=0.0)
    backoffs.failed("config", "a", now=0.5)  # config now waits 1 s
    backoffs.failed("token", "b", now=0.6)  # token waits 0.5 s
    assert backoffs.next_retry_at() == pytest.approx(1.1)
    assert backoffs.next_retry_at(["config"]) == pytest.approx(1.5)
    assert backoffs.next_retry_at(["emptydir"]) is None
    assert backoffs.safe_to_retry("token", 1.1) and not backoffs.safe_to_retry("config", 1.1)
    assert backoffs.safe_to_retry("never-failed", 0.0)

    backoffs.succeeded("config")
    assert backoffs.safe_to_retry("config", 0.0)
    backoffs.failed("config", "a", now=5.0)
    assert backoffs.operations["config"].duration == 0.5  # from the start again


def test_the_sync_back_off_is_ten_seconds_plus_up_to_half_again():
    rng = random.Random(3)
    waits = [sync_backoff(rng) for _ in range(200)]
    assert all(10.0 <= wait < 15.0 for wait in waits)
    assert max(waits) - min(waits) > 3.0  # jittered, not constant
    assert 1.0 <= sync_backoff(random.Random(1), period=1.0) < 1.5


POD = {"metadata": {"name": "train-0", "namespace": "team", "uid": "u-1", "resourceVersion": "41"}}


def test_an_event_names_its_pod_source_and_times_as_the_kubelet_does():
    body = event_body(
        "train-0.1a2b",
        involved_pod(POD),
        "Warning",
        "FailedMount",
        'MountVolume.SetUp failed for volume "config" : configmap "cfg" not found',
        host="sandbox",
        now=NOW,
    )
    assert body["metadata"] == {"name": "train-0.1a2b", "namespace": "team"}
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "team",
        "name": "train-0",
        "uid": "u-1",
        "resourceVersion": "41",
    }
    assert body["source"] == {"component": "kubelet", "host": "sandbox"}
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "FailedMount", 1)
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-01-01T12:00:00Z"


def test_repeats_share_a_key_and_other_messages_or_objects_do_not():
    def key(pod=POD, message="m", field_path=""):
        return aggregation_key(
            event_body("x", involved_pod(pod, field_path), "Warning", "FailedMount", message, host="sandbox", now=NOW)
        )

    later = {"metadata": {**POD["metadata"], "resourceVersion": "99"}}
    assert key() == key(pod=later)  # the pod changed, the event is the same
    assert key() != key(message="other")
    assert key() != key(pod={"metadata": {**POD["metadata"], "uid": "u-2"}})  # a new pod of the same name
    assert key() != key(field_path=container_field_path("trainer"))
    assert container_field_path("trainer") == "spec.containers{trainer}"
    assert container_field_path("setup", init=True) == "spec.initContainers{setup}"
