"""The window a watch resumes from, as the API server's watch cache keeps it: per resource, the last 75 s
(at least 100 events, at most 102,400). Other resources' traffic never expires a watch."""

from __future__ import annotations

from dataclasses import dataclass

from finetune_sandbox.apiserver import ApiServer
from finetune_sandbox.apiserver.history import FRESH_SECONDS, LOWER_BOUND, UPPER_BOUND, History
from finetune_sandbox.apiserver.testing import RawClient

CM = "/api/v1/namespaces/default/configmaps"
SECRETS = "/api/v1/namespaces/default/secrets"


@dataclass
class Ev:
    rv: int


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_window_keeps_the_last_75_seconds_and_at_least_100_events():
    clock = Clock()
    history: History[Ev] = History(clock=clock)
    for rv in range(1, 301):  # 300 events, one a second
        clock.now = float(rv)
        history.append(Ev(rv))
    # At 300 s the events of the last 75 s are kept, but never fewer than 100.
    assert len(history) == LOWER_BOUND and history.dropped_rv == 200
    assert history.expired(199) and not history.expired(200)
    assert [e.rv for e in history.since(297)] == [298, 299, 300]
    # A burst: everything of the last 75 s is kept, however many.
    clock.now = 400.0
    for rv in range(301, 5301):
        history.append(Ev(rv))
    assert len(history) == 5000 and history.dropped_rv == 300
    clock.now = 400.0 + FRESH_SECONDS + 1
    history.append(Ev(5301))
    assert len(history) == LOWER_BOUND  # the burst aged out, 100 kept


def test_the_window_never_holds_more_than_102400_events():
    history: History[Ev] = History(clock=Clock())  # all at the same instant
    for rv in range(1, UPPER_BOUND + 11):
        history.append(Ev(rv))
    assert len(history) == UPPER_BOUND and history.dropped_rv == 10


async def test_another_resources_traffic_does_not_expire_a_watch_but_its_own_does():
    server = ApiServer(port=0, history_size=50, graceful_pod_deletion=False)
    url = await server.start()
    try:
        async with RawClient(url) as http:
            _, first = await http.post(CM, {"metadata": {"name": "quiet"}})
            since = first["metadata"]["resourceVersion"]
            for n in range(200):  # four windows' worth of secrets
                await http.post(SECRETS, {"metadata": {"name": f"s{n}"}})
            await http.post(CM, {"metadata": {"name": "after"}})
            events = await http.watch(CM, {"resourceVersion": since, "timeoutSeconds": "1"})
            assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "after")]
            assert not server.deliveries.expired

            for n in range(60):  # more configmap events than its window holds
                await http.post(CM, {"metadata": {"name": f"c{n}"}})
            events = await http.watch(CM, {"resourceVersion": since, "timeoutSeconds": "1"})
            assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [
                ("ERROR", 410, "Expired")
            ]
            assert sum(server.deliveries.expired.values()) == 1
            assert [key[1:] for key in server.deliveries.expired] == [("", "configmaps")]
    finally:
        await server.stop()
