"""The garbage collector: ownerReference cascades, foreground/orphan finalizers, namespace and CRD cleanup.

It runs as one background task woken by store events, so writes stay O(1) and the collector only
looks at owners that went away or objects that are being deleted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .deletion import FOREGROUND, ORPHAN
from .errors import ApiError
from .objects import Objects
from .resources import CRD_KEY, NS_KEY, ResourceType
from .store import Event, ObjKey

logger = logging.getLogger(__name__)


class GarbageCollector:
    def __init__(self, objects: Objects, interval: float = 1.0) -> None:
        self.objects = objects
        self.store = objects.store
        self.interval = interval  # periodic sweep for dangling owner references
        self._wake = asyncio.Event()
        self._gone_uids: set[str] = set()
        self._terminating: set[ObjKey] = set()
        self._task: asyncio.Task | None = None
        self.store.listeners.append(self._on_event)
        objects.on_terminating = self._wake.set

    def _on_event(self, event: Event) -> None:
        meta = event.obj.get("metadata") or {}
        if event.type == "DELETED":
            self._terminating.discard(event.key)
            if self.store.dependents_of(meta.get("uid", "")):
                self._gone_uids.add(meta["uid"])
                self._wake.set()
            if event.key[:2] in (NS_KEY, CRD_KEY) or self._terminating:
                self._wake.set()
        elif meta.get("deletionTimestamp"):
            self._terminating.add(event.key)
            self._wake.set()
        elif any(not self.store.has_uid(ref.get("uid", "")) for ref in meta.get("ownerReferences") or ()):
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="apiserver-garbage-collector")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                self.collect()
            except Exception:  # the collector must survive any single bad object
                logger.exception("garbage collection pass failed")
            await asyncio.sleep(0.01)  # let a burst of writes settle before the next pass

    def _rt(self, key: ObjKey) -> ResourceType | None:
        group, plural = key[:2]
        for rt in self.objects.registry.all_types():
            if rt.group == group and rt.plural == plural:
                return rt
        return None

    def collect(self) -> None:
        """One pass; synchronous, so every decision sees one consistent state."""
        for uid in [u for u in self.store.owner_uids() if not self.store.has_uid(u)]:
            self._gone_uids.add(uid)
        gone, self._gone_uids = self._gone_uids, set()
        for uid in gone:
            for key in self.store.dependents_of(uid):
                self._collect_dependent(key)
        for key in list(self._terminating):
            obj = self.store.get(*key)
            if obj is None:
                self._terminating.discard(key)
                continue
            self._finish_deletion(key, obj)

    def _collect_dependent(self, key: ObjKey) -> None:
        obj = self.store.get(*key)
        rt = self._rt(key)
        if obj is None or rt is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if any(self.store.has_uid(ref.get("uid", "")) for ref in refs):
            live = [ref for ref in refs if self.store.has_uid(ref.get("uid", ""))]
            self.objects.patch(
                rt, key[2] or None, key[3], "application/merge-patch+json", {"metadata": {"ownerReferences": live}}
            )
            return
        self._delete(rt, key, "Background")

    def _delete(self, rt: ResourceType, key: ObjKey, policy: str) -> None:
        try:
            self.objects.delete(rt, key[2] or None, key[3], {"propagationPolicy": policy})
        except ApiError as exc:
            if exc.code != 404:
                raise

    def _finish_deletion(self, key: ObjKey, obj: dict[str, Any]) -> None:
        rt = self._rt(key)
        if rt is None:
            return
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or ())
        uid = meta.get("uid", "")
        if FOREGROUND in finalizers:
            dependents = self.store.dependents_of(uid)
            for dep in dependents:
                dep_rt = self._rt(dep)
                dep_obj = self.store.get(*dep)
                if dep_rt and dep_obj and not dep_obj["metadata"].get("deletionTimestamp"):
                    self._delete(dep_rt, dep, "Foreground")
            if not self.store.dependents_of(uid):
                finalizers.remove(FOREGROUND)
        if ORPHAN in finalizers:
            for dep in self.store.dependents_of(uid):
                dep_rt, dep_obj = self._rt(dep), self.store.get(*dep)
                if dep_rt and dep_obj:
                    refs = [r for r in dep_obj["metadata"].get("ownerReferences") or () if r.get("uid") != uid]
                    self.objects.patch(
                        dep_rt,
                        dep[2] or None,
                        dep[3],
                        "application/merge-patch+json",
                        {"metadata": {"ownerReferences": refs or None}},
                    )
            finalizers.remove(ORPHAN)
        if key[:2] == NS_KEY:
            self._empty_namespace(key[3])
        elif key[:2] == CRD_KEY:
            spec = obj.get("spec") or {}
            self._empty_type(spec.get("group", ""), (spec.get("names") or {}).get("plural", ""), None)
        if finalizers != list(meta.get("finalizers") or ()):
            self.objects.patch(
                rt,
                key[2] or None,
                key[3],
                "application/merge-patch+json",
                {"metadata": {"finalizers": finalizers or None}},
            )
        else:
            current = self.store.get(*key)
            if current is not None:
                self.objects.finalize(rt, current)

    def _empty_namespace(self, namespace: str) -> None:
        for group, plural in self.store.type_keys():
            if self.store.count(group, plural, namespace):
                self._empty_type(group, plural, namespace)

    def _empty_type(self, group: str, plural: str, namespace: str | None) -> None:
        rt = self._rt((group, plural, "", ""))
        if rt is None:
            return
        for obj in list(self.store.list(group, plural, namespace)):
            if not obj["metadata"].get("deletionTimestamp"):
                self._delete(
                    rt, (group, plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]), "Background"
                )
