"""The FineTuneJobs (and search trials) this operator process knows: one JobRecord each.

The reconcile registers what it observes (`track`) and applies its plans' record changes; the progress
hub feeds reports into the records; the metrics collector and the periodic sweep read them. Nothing
here talks to the API: a restarted operator rebuilds the registry from the objects' status.
"""

from __future__ import annotations

from datetime import datetime

from .progress.records import JobRecord

Key = tuple[str, str]


class JobRegistry:
    def __init__(self) -> None:
        self.records: dict[Key, JobRecord] = {}

    def get(self, namespace: str, name: str) -> JobRecord | None:
        return self.records.get((namespace, name))

    def track(
        self,
        namespace: str,
        name: str,
        *,
        uid: str,
        created: datetime,
        gpus: int,
        gpu_seconds: float,
        parent: str | None = None,
    ) -> JobRecord:
        """The job's record, made on first sight (or when a new job reuses the name)."""
        key = (namespace, name)
        record = self.records.get(key)
        if record is None or record.uid != uid or record.parent != parent:
            # GPU-seconds continue from the status: earlier operator lives counted them already.
            record = JobRecord(
                namespace,
                name,
                uid=uid,
                created=created,
                gpus=gpus,
                gpu_seconds=gpu_seconds,
                gpu_counted=gpu_seconds,
                parent=parent,
            )
            self.records[key] = record
        return record

    def jobs(self) -> list[Key]:
        """The FineTuneJobs tracked (search trials excluded): what the periodic sweep reconciles."""
        return [key for key, record in list(self.records.items()) if record.parent is None]

    def forget(self, namespace: str, name: str) -> list[Key]:
        """Drop a deleted FineTuneJob's records, its search trials' included; returns the keys dropped."""
        trials = [key for key, record in self.records.items() if key[0] == namespace and record.parent == name]
        dropped = []
        for key in [(namespace, name), *trials]:
            if self.records.pop(key, None) is not None:
                dropped.append(key)
        return dropped

    def all(self) -> list[JobRecord]:
        return list(self.records.values())
