"""A Job short of pods is asked about at most once per interval, however often it is reconciled: in a burst
of thousands of new Jobs each reconcile used to list the namespace's events (docs/scaling.md)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from finetune_operator.reconcile.failed_create_lookups import FORGET_AFTER_SECONDS, FailedCreateLookups
from finetune_operator.reconcile.job import JobObservation
from finetune_operator.reconcile.observe import with_failed_creates
from finetune_operator.spec import parse_spec
from finetune_operator.status import Observed
from test_plan_job import CREATED, SPEC_BODY, ftj, job, pod
from test_refusals import QUOTA_EVENT


class CountingKube:
    """The one API call with_failed_creates makes, counted; what it answers can change between calls."""

    def __init__(self, answer: list[dict[str, Any]]) -> None:
        self.answer, self.calls = answer, 0

    def failed_create_events(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        assert (namespace, uid) == ("ns", "job-uid")
        self.calls += 1
        return list(self.answer)


class Clock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def short_of_pods(pods: list[dict[str, Any]] | None = None) -> JobObservation:
    the_job = job(active=0)
    the_job["metadata"]["uid"] = "job-uid"
    return JobObservation(ftj=ftj(), spec=parse_spec(SPEC_BODY, "ft"), children=Observed(the_job, pods or []))


def reconcile(kube: CountingKube, lookups: FailedCreateLookups, age_seconds: float, pods=None) -> Observed:
    now = CREATED + timedelta(seconds=age_seconds)
    return asyncio.run(with_failed_creates(kube, short_of_pods(pods), lookups, now)).children


def test_a_young_job_short_of_pods_is_asked_about_once_a_second_however_often_it_is_reconciled():
    kube, clock = CountingKube([]), Clock()
    lookups = FailedCreateLookups(clock=clock)
    for _ in range(50):  # fifty events on the job within the same second
        assert reconcile(kube, lookups, age_seconds=2).failed_creates == []
    assert kube.calls == 1
    # The quota refusal the Job controller posts meanwhile is seen at the first reconcile a second later.
    kube.answer = [QUOTA_EVENT]
    clock.seconds += 0.5
    assert reconcile(kube, lookups, age_seconds=2.5).failed_creates == []
    clock.seconds += 0.6
    assert reconcile(kube, lookups, age_seconds=3.1).failed_creates == [QUOTA_EVENT]
    assert kube.calls == 2


def test_a_job_that_has_waited_long_is_asked_about_every_thirty_seconds_at_most():
    kube, clock = CountingKube([QUOTA_EVENT]), Clock()
    lookups = FailedCreateLookups(clock=clock)
    for second in range(0, 90, 3):
        clock.seconds = 1000.0 + second
        assert reconcile(kube, lookups, age_seconds=3600 + second).failed_creates == [QUOTA_EVENT]
    assert kube.calls == 3  # at 0, 30 and 60 s


def test_once_the_pods_are_there_the_next_shortfall_is_asked_about_afresh():
    kube, clock = CountingKube([QUOTA_EVENT]), Clock()
    lookups = FailedCreateLookups(clock=clock)
    reconcile(kube, lookups, age_seconds=3600)
    all_there = [pod("ft-0"), pod("ft-1")]  # two ranks (SPEC_BODY)
    assert reconcile(kube, lookups, age_seconds=3600, pods=all_there).failed_creates == []
    assert lookups.answers == {}
    reconcile(kube, lookups, age_seconds=3600)  # a rank lost: asked at once, not 30 s after the last answer
    assert kube.calls == 2


def test_answers_for_jobs_never_seen_again_are_dropped():
    clock = Clock()
    lookups = FailedCreateLookups(clock=clock)

    async def nothing() -> list[dict[str, Any]]:
        return []

    for i in range(100):
        asyncio.run(lookups.events(f"deleted-{i}", nothing, fresh_for=1.0))
    clock.seconds += FORGET_AFTER_SECONDS + 1
    asyncio.run(lookups.events("live", nothing, fresh_for=1.0))
    assert list(lookups.answers) == ["live"]


def test_a_failed_list_is_not_remembered_and_the_status_says_what_the_pods_show():
    class Failing(CountingKube):
        def failed_create_events(self, namespace: str, uid: str) -> list[dict[str, Any]]:
            self.calls += 1
            raise ConnectionError("API server unreachable")

    kube, lookups = Failing([]), FailedCreateLookups(clock=Clock())
    assert reconcile(kube, lookups, age_seconds=2).failed_creates == []
    assert reconcile(kube, lookups, age_seconds=2).failed_creates == []
    assert kube.calls == 2 and lookups.answers == {}
