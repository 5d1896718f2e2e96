"""Stands in for the official `kubernetes` client, which the operator image does not install (see
bench/operator_sandbox.py IMAGE_LIKE_PATH): importing it fails as it would there."""

raise ImportError("the official kubernetes client is not in the operator image")
