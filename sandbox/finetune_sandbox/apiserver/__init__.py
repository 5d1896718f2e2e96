"""An in-process Kubernetes API server for the sandbox, speaking the real HTTP API.

The unmodified Kopf operator, `kubectl` and the official `kubernetes` client work against it
through the kubeconfig it writes::

    server = ApiServer(host="127.0.0.1", port=0)
    url = await server.start()
    server.write_kubeconfig(path)
    ...
    await server.stop()

Fault injection for reliability tests: ``server.faults.add(method="PATCH", path_regex=r"/status$",
status=500, times=2)``; ``status=0`` drops the connection without an answer.

Deliberate limits, each answered the way a client can act on: server-side apply (apply-patch+yaml)
is 415, so use client-side ``kubectl apply``; protobuf request bodies are read only for the kinds
kubectl's typed ``create`` commands send (namespace, configmap, secret, serviceaccount, quota,
priorityclass), others get 415; aggregated discovery requests get the legacy documents (clients fall back); ``limit``/``continue``
page live data rather than one snapshot; every served version of a CRD shares one storage with no
conversion; no authentication, RBAC, admission webhooks, LimitRanges, Pod Security admission or
pod-spec immutability; apps/v1 and
rbac.authorization.k8s.io/v1 objects are stored but no controller acts on them.

Modules, one idea each: `store` (objects, resourceVersions, history, watchers), `resources`
(kinds and discovery), `objects` (create/update/patch/delete semantics, status subresource,
finalizers, CRDs) with its pure parts `metadata` (the metadata the server owns), `defaults`
(built-in kinds' defaults), `validation` (names, built-in kinds, the CRD schema bridge) with
`podspec` (pod specs and Job templates), `identifiers` (upstream's name rules), `fielderrors` (field
errors worded as upstream) and `quantity` (resource quantities), `admission` (ResourceQuota and
Priority, the admission plugins a real server runs by default, with the quota controller's status), `crds`
(a CRD's checks and status) and `deletion` (preconditions, propagation, grace periods); `gc` (owner
references, namespace/CRD cleanup), `patching`, `selectors`, `tables` (server-side printing),
`openapi`, `protobuf`, `faults`; over HTTP: `handlers` (routes, resource paths to object
semantics), `discovery`, `listing`, `watches`, `pod_logs`, `wire` (JSON responses, request bodies,
errors as Status objects); `testing` (a raw HTTP client for tests).
"""

from .errors import ApiError
from .faults import Faults
from .server import ApiServer

__all__ = ["ApiServer", "ApiError", "Faults"]
