"""Which pod runs a training process, and which lines of that pod's log are the process's own (pure).

A FineTuneJob runs NNODES pods of NPROC_PER_NODE processes each (docs/pod-contract.md): process `rank`
(torchrun's global RANK) runs in the pod whose completion index is rank // NPROC_PER_NODE. A pod of several
processes has one log for all of them: torchrun passes its workers' output through, and marks a worker's
lines `[rankN]:` where it is asked to (`--tee` with TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE; torch's own C++
warnings carry the mark anyway). So one rank's view of a shared log leaves out the lines marked as another
rank's and keeps the rest: its own, and those nobody marked (torchrun's, or all of them where torchrun
does not mark lines), which may be any of the pod's processes'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Where a line says which process wrote it: torchrun's prefix, and torch's C++ log prefix.
_MARK = re.compile(rb"^\[rank(\d+)\]:")


def pod_shape(env: Mapping[str, str]) -> tuple[int, int]:
    """(nodes, processes per node) from a trainer container's variables (the pod contract's NNODES and
    NPROC_PER_NODE); 1 for a variable that is missing or not a positive number."""

    def count(name: str) -> int:
        value = env.get(name) or ""
        return int(value) if value.isdigit() and int(value) > 0 else 1

    return count("NNODES"), count("NPROC_PER_NODE")


def node_of(rank: int, nodes: int, per_node: int) -> int:
    """The completion index of the pod that runs `rank`; ValueError naming the job's ranks when it has none."""
    if not 0 <= rank < nodes * per_node:
        shape = f"{nodes} node{'s' if nodes != 1 else ''} × {per_node} process{'es' if per_node != 1 else ''}"
        raise ValueError(f"rank {rank} is not one of this job's ranks 0-{nodes * per_node - 1} ({shape})")
    return rank // per_node


class RankLines:
    """Filters a shared pod log, fed in chunks as they stream in, down to one rank's view (see above)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete lines of `chunk` (with what came before it) that this rank sees."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        return self._keep(line + b"\n" for line in lines)

    def finish(self) -> bytes:
        """The last line, when the log does not end with a newline."""
        rest, self._partial = self._partial, b""
        return self._keep([rest]) if rest else b""

    def _keep(self, lines: Iterable[bytes]) -> bytes:
        kept = []
        for line in lines:
            mark = _MARK.match(line)
            if mark is None or int(mark.group(1)) == self.rank:
                kept.append(line)
        return b"".join(kept)


def last_lines(data: bytes, count: int | None) -> bytes:
    """The last `count` lines of `data` (all of it for None), as the API server's tailLines cuts a log."""
    if count is None:
        return data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:]) if count > 0 else b""
