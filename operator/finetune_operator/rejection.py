"""A child the API server refused for good, as a FineTuneJob's failure (pure).

400 and 422 mean the object is invalid (the Job API validates more than the CRD could); 403 on a create
the operator's RBAC allows means an admission plugin forbade it (a namespace being terminated, a quota on
object counts, a policy). Retrying either cannot help until the spec changes: the job fails at once,
naming the FineTuneJob field behind the refused one and quoting the API server. 409, 429, 5xx and
dropped connections stay transient (retried with backoff).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import reasons as r

PERMANENT_STATUSES = (400, 403, 422)

# Where a refused Job's (or pod template's) fields come from in the FineTuneJob, longest prefix first.
_FIELD_SOURCES = (
    ("spec.template.spec.tolerations", "spec.scheduling.tolerations"),
    ("spec.template.spec.nodeSelector", "spec.scheduling.nodeSelector"),
    ("spec.template.spec.affinity", "spec.scheduling.affinity"),
    ("spec.template.spec.priorityClassName", "spec.scheduling.priorityClassName"),
    ("spec.template.spec.schedulerName", "spec.scheduling.schedulerName"),
    ("spec.template.spec.containers[0].env", "spec.env"),
    ("spec.template.spec.containers[0].image", "spec.image"),
    ("spec.template.spec.containers[0].resources", "spec.resources"),
    ("spec.activeDeadlineSeconds", "spec.runPolicy.activeDeadlineSeconds"),
    ("spec.backoffLimit", "spec.runPolicy.backoffLimit"),
    ("metadata.labels[kueue.x-k8s.io/queue-name]", "spec.scheduling.queueName"),
)
_FIELD_IN_MESSAGE = re.compile(r"(?:^|[\s:])((?:metadata|spec)\.[\w.\[\]/-]+):")


@dataclass(frozen=True)
class Rejection:
    """The API server's refusal of one child: its kind and name, the HTTP status and its message."""

    kind: str
    name: str
    status: int
    message: str

    @property
    def reason(self) -> str:
        return r.FORBIDDEN if self.status == 403 else r.INVALID_SPEC

    def spec_field(self) -> str | None:
        """The FineTuneJob field behind the first refused field the message names, if one is known."""
        match = _FIELD_IN_MESSAGE.search(self.message)
        if match is None:
            return None
        refused = match.group(1)
        for prefix, source in _FIELD_SOURCES:
            if refused.startswith(prefix):
                return source
        return None

    def status_message(self) -> str:
        field = self.spec_field()
        fix = f"fix {field}" if field else "fix what the API server names"
        what = "refused" if self.reason == r.INVALID_SPEC else "forbade"
        return (
            f"the API server {what} the {self.kind} {self.name} (HTTP {self.status}): {self.message.strip()}; "
            f"{fix} and apply the FineTuneJob again (a spec change retries)"
        )
