"""One reconcile: observe the FineTuneJob and its children, plan (pure), then act on the plan.

`plan.py` is the vocabulary (what a plan may ask for), `job.py` plans a plain job, `search/plan.py`
a hyperparameter search, `apply.py` carries a plan out against the API, and `loop.py` runs one
reconcile at a time per job, with retries and the periodic sweep.
"""
