"""Training progress: what trainers report and what the operator does with it.

- `report`: one progress report (docs/progress.md), parsed and checked, or refused naming the key (pure).
- `records`: what the operator knows about each job's progress, in memory (`JobRecord`), and the status
  fields rendered from it (pure).
- `hub`: where accepted reports land: per-job records and tokens, and throttled status writes.
- `server`: the HTTP endpoints: reports in (POST), Prometheus metrics out (GET /metrics).

Nothing is re-exported here: import the module that holds a name (`from finetune_operator.progress.hub
import ProgressHub`).
"""
