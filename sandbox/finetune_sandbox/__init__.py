"""The local sandbox control plane: an in-process Kubernetes API server and its helpers."""
