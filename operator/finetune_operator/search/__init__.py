"""Hyperparameter search inside a FineTuneJob: parameter paths, suggestions, early stopping, trial bookkeeping."""
