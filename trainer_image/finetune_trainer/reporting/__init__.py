"""What training reports, and to whom: the progress report to the operator and the trainer's own /metrics.

- `gpu`: GPU usage of this node from NVML;
- `throughput`: samples and tokens per second, measured from step ends;
- `report`: the progress report's body (pure; the schema of docs/progress.md);
- `prometheus`: the trainer's /metrics registry and its HTTP server;
- `sender`: POSTs reports to the operator from a background thread, with retries and the job's token;
- `callbacks`: the transformers TrainerCallbacks that feed all of the above;
- `environment`: the callbacks a run gets, from the variables the operator sets.

A module imports only modules listed above it. This `__init__` imports nothing, so everything above
`callbacks` loads without transformers.
"""
