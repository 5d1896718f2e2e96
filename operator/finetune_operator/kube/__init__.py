"""The operator's one way to the Kubernetes API: `api.py` (KubeApi: the calls, and what it remembers of
FineTuneJobs and its own status writes) over `client.py` (the small urllib3 client and its logins)."""

from .api import KubeApi
from .client import ApiClient, ApiError
from .versions import newer_version

__all__ = ["ApiClient", "ApiError", "KubeApi", "newer_version"]
