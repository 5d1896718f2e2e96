"""Pod templates of Jobs (and pods) are validated as the real API server does, with its 422 messages
(upstream: pkg/apis/core/validation/validation.go, k8s.io/apimachinery/pkg/util/validation)."""

from __future__ import annotations

import pytest
from finetune_sandbox.apiserver.testing import RawClient

JOBS = "/apis/batch/v1/namespaces/default/jobs"
PODS = "/api/v1/namespaces/default/pods"
QUALIFIED = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation "
    "is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
T = "spec.template.spec"


@pytest.fixture
async def http(apiserver):
    async with RawClient(apiserver.url) as client:
        yield client


def job(name: str = "train", **pod_spec) -> dict:
    spec = {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "img"}], **pod_spec}
    return {"metadata": {"name": name}, "spec": {"template": {"spec": spec}}}


async def refused(http, body: dict, path: str = JOBS) -> dict:
    status, answer = await http.post(path, body)
    assert status == 422, answer
    assert (answer["kind"], answer["status"], answer["reason"], answer["code"]) == ("Status", "Failure", "Invalid", 422)
    return answer


async def test_toleration_operator_outside_the_enum(http):
    body = await refused(http, job(tolerations=[{"key": "gpu", "operator": "Sometimes"}]))
    assert body["message"] == (
        f'Job.batch "train" is invalid: {T}.tolerations[0].operator: Unsupported value: "Sometimes": '
        'supported values: "Equal", "Exists"'
    )
    assert body["details"] == {
        "name": "train",
        "group": "batch",
        "kind": "Job",
        "causes": [
            {
                "reason": "FieldValueNotSupported",
                "message": 'Unsupported value: "Sometimes": supported values: "Equal", "Exists"',
                "field": f"{T}.tolerations[0].operator",
            }
        ],
    }


@pytest.mark.parametrize(
    ("toleration", "field", "message"),
    [
        (
            {"key": "gpu", "operator": "Exists", "effect": "NoRun"},
            "tolerations[0].effect",
            'Unsupported value: "NoRun": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"',
        ),
        (
            {"key": "gpu", "operator": "Exists", "value": "x"},
            "tolerations[0].operator",
            "Invalid value: \"x\": value must be empty when `operator` is 'Exists'",
        ),
        (
            {"operator": "Equal", "value": "x"},
            "tolerations[0].operator",
            'Invalid value: "Equal": operator must be Exists when `key` is empty, which means "match all values and '
            'all keys"',
        ),
        (
            {"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5},
            "tolerations[0].effect",
            "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
        ),
        ({"key": "bad key!", "operator": "Exists"}, "tolerations[0].key", f'Invalid value: "bad key!": {QUALIFIED}'),
        ({"key": "gpu", "value": "not ok!"}, "tolerations[0].operator", f'Invalid value: "not ok!": {LABEL_VALUE}'),
    ],
)
async def test_other_toleration_rules(http, toleration, field, message):
    body = await refused(http, job(tolerations=[toleration]))
    assert body["message"] == f'Job.batch "train" is invalid: {T}.{field}: {message}'


async def test_node_selector_keys_are_qualified_names_and_values_label_values(http):
    body = await refused(http, job(nodeSelector={"bad key!": "x"}))
    assert body["message"] == f'Job.batch "train" is invalid: {T}.nodeSelector: Invalid value: "bad key!": {QUALIFIED}'
    body = await refused(http, job(nodeSelector={"gpu": "a100 80gb"}))
    assert (
        body["message"] == f'Job.batch "train" is invalid: {T}.nodeSelector: Invalid value: "a100 80gb": {LABEL_VALUE}'
    )
    prefixed = await refused(http, job(nodeSelector={"Bad_Prefix/gpu": "x"}))
    assert prefixed["details"]["causes"][0]["message"] == f'Invalid value: "Bad_Prefix/gpu": prefix part {SUBDOMAIN}'


async def test_env_var_names_are_printable_ascii_without_equals(http):
    containers = [{"name": "trainer", "image": "img", "env": [{"name": "A=B", "value": "1"}, {"name": "ok name"}]}]
    body = await refused(http, job(containers=containers))
    assert body["message"] == (
        f'Job.batch "train" is invalid: {T}.containers[0].env[0].name: Invalid value: "A=B": a valid environment '
        "variable name must consist only of printable ASCII characters other than '='"
    )


async def test_priority_class_name_is_a_dns_subdomain_and_scheduler_name_is_free_form(http):
    body = await refused(http, job(priorityClassName="GPU_High"))
    assert (
        body["message"]
        == f'Job.batch "train" is invalid: {T}.priorityClassName: Invalid value: "GPU_High": {SUBDOMAIN}'
    )
    # Upstream does not validate schedulerName at all: neither does the sandbox.
    status, _ = await http.post(JOBS, job("free", schedulerName="My_Scheduler"))
    assert status == 201


async def test_node_affinity_operators_and_terms(http):
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Sometimes", "values": ["a"]}]}]
            }
        }
    }
    body = await refused(http, job(affinity=affinity))
    assert body["message"] == (
        f'Job.batch "train" is invalid: {T}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.'
        'nodeSelectorTerms[0].matchExpressions[0].operator: Invalid value: "Sometimes": not a valid selector operator'
    )
    empty = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    body = await refused(http, job(affinity=empty))
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value: must have at least one node selector term",
            "field": f"{T}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
        }
    ]
    exists = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 0,
                    "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists", "values": ["a"]}]},
                }
            ]
        }
    }
    body = await refused(http, job(affinity=exists))
    prefix = f"{T}.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
    assert body["message"] == (
        f'Job.batch "train" is invalid: [{prefix}.weight: Invalid value: 0: must be in the range 1-100, '
        f"{prefix}.preference.matchExpressions[0].values: Forbidden: may not be specified when `operator` is "
        "'Exists' or 'DoesNotExist']"
    )


async def test_pod_affinity_needs_a_topology_key(http):
    affinity = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}]}}
    body = await refused(http, job(affinity=affinity))
    at = f"{T}.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"
    causes = [(c["field"], c["reason"], c["message"]) for c in body["details"]["causes"]]
    assert causes[0] == (at, "FieldValueRequired", "Required value: can not be empty")
    assert [c[0] for c in causes] == [at, at, at]  # and, as upstream, the empty key also fails as a qualified name
    assert body["message"].startswith(f'Job.batch "train" is invalid: [{at}: Required value: can not be empty, ')


async def test_several_problems_are_listed_in_brackets_in_upstream_order(http):
    body = await refused(
        http, job(nodeSelector={"ok": "bad value!"}, tolerations=[{"key": "gpu", "operator": "Sometimes"}])
    )
    assert body["message"] == (
        f'Job.batch "train" is invalid: [{T}.nodeSelector: Invalid value: "bad value!": {LABEL_VALUE}, '
        f'{T}.tolerations[0].operator: Unsupported value: "Sometimes": supported values: "Equal", "Exists"]'
    )
    assert [c["field"] for c in body["details"]["causes"]] == [f"{T}.nodeSelector", f"{T}.tolerations[0].operator"]


async def test_a_pod_is_checked_by_the_same_rules_on_its_own_paths(http):
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "m", "image": "x"}], "tolerations": [{"key": "gpu", "operator": "Sometimes"}]},
    }
    body = await refused(http, pod, PODS)
    assert body["message"] == (
        'Pod "p" is invalid: spec.tolerations[0].operator: Unsupported value: "Sometimes": supported values: '
        '"Equal", "Exists"'
    )


async def test_a_job_without_a_restart_policy_that_ends(http):
    body = await refused(
        http, {"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "m", "image": "x"}]}}}}
    )
    assert body["message"] == (
        'Job.batch "j" is invalid: spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"'
    )
    body = await refused(http, job("k", restartPolicy="Sometimes"))
    assert body["message"] == (
        'Job.batch "k" is invalid: spec.template.spec.restartPolicy: Unsupported value: "Sometimes": supported '
        'values: "OnFailure", "Never"'
    )


async def test_a_valid_template_with_every_field_is_accepted(http):
    spec = {
        "nodeSelector": {"nvidia.com/gpu.product": "A100-SXM4-80GB"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 30},
            {"operator": "Exists"},
        ],
        "priorityClassName": "gpu-high",
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
                }
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app": "trainer"}},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            },
        },
        "containers": [{"name": "trainer", "image": "img", "env": [{"name": "HF_HOME", "value": "/cache"}]}],
    }
    status, body = await http.post(JOBS, job(**spec))
    assert status == 201, body
