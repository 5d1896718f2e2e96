import copy
import json

import kubernetes_validate
import pytest
from finetune_operator.builders import build_config_map, build_job, build_service, config_hash
from finetune_operator.config import OperatorConfig
from finetune_operator.spec import parse_spec

BASE = {
    "task": "text-classification",
    "model": {"source": "hf://org/model"},
    "dataset": {"train": "s3://bucket/train.csv"},
    "output": {"uri": "s3://bucket/out"},
}
CONFIG = OperatorConfig()
RANK_PATH = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def _job(config=CONFIG, name="sentiment", namespace="team-a", **fields):
    spec = parse_spec({**copy.deepcopy(BASE), **fields}, name)
    return build_job(spec, name, namespace, config=config, config_hash="0123456789abcdef")


def _pod(job):
    return job["spec"]["template"]["spec"]


def _trainer(job):
    (container,) = _pod(job)["containers"]
    return container


def _env(job):
    return {entry["name"]: entry for entry in _trainer(job)["env"]}


def _env_values(job):
    return {name: entry.get("value") for name, entry in _env(job).items()}


# --- the Job itself ---------------------------------------------------------------------------


def test_job_is_indexed_with_one_completion_per_node():
    job = _job(resources={"nodes": 3})
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "sentiment" and job["metadata"]["namespace"] == "team-a"
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 3 and job["spec"]["parallelism"] == 3


def test_job_and_pods_carry_child_labels_matching_the_service_selector():
    job = _job()
    labels = {"app.kubernetes.io/managed-by": "finetune-operator", "finetune.dev/job-name": "sentiment"}
    assert job["metadata"]["labels"] == labels
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    selector = build_service(parse_spec(BASE), "sentiment", "team-a")["spec"]["selector"]
    assert selector.items() <= pod_labels.items()


def test_backoff_limit_is_job_level_from_run_policy():
    job = _job(runPolicy={"backoffLimit": 7})
    assert job["spec"]["backoffLimit"] == 7
    assert "backoffLimitPerIndex" not in job["spec"]


def test_active_deadline_only_when_set_and_never_a_job_ttl():
    assert "activeDeadlineSeconds" not in _job()["spec"]
    job = _job(runPolicy={"activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60})
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert "ttlSecondsAfterFinished" not in job["spec"]


def test_job_runs_immediately_without_queue_or_suspend():
    job = _job()
    assert job["spec"]["suspend"] is False
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]


def test_run_policy_suspend_suspends_the_job():
    assert _job(runPolicy={"suspend": True})["spec"]["suspend"] is True


def test_queue_name_suspends_the_job_and_labels_it_for_kueue():
    job = _job(scheduling={"queueName": "team-a-queue"})
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-queue"


def test_pod_failure_policy_fails_fast_on_final_failures_and_ignores_disruptions():
    job = _job()
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert [rule["action"] for rule in rules] == ["FailJob", "Ignore", "Count"]
    # InvalidData 3, StorageAccessDenied 6, StorageNotFound 7, StorageRequestRejected 9, HubUnreachable 10: a
    # retry meets the same answer. StorageUnavailable 8 counts: the next attempt may reach the store.
    # The API wants the values sorted and without duplicates.
    assert rules[0]["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [3, 6, 7, 9, 10]}
    assert rules[1]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert rules[2]["onExitCodes"] == {"containerName": "trainer", "operator": "NotIn", "values": [0, 3, 6, 7, 9, 10]}
    # The API rejects podFailurePolicy unless pods never restart in place.
    assert _pod(job)["restartPolicy"] == "Never"
    assert job["spec"]["podReplacementPolicy"] == "Failed"


# --- the pod ----------------------------------------------------------------------------------


def test_pod_template_carries_the_config_hash_and_the_service_subdomain():
    job = _job()
    assert job["spec"]["template"]["metadata"]["annotations"] == {"finetune.dev/config-hash": "0123456789abcdef"}
    assert _pod(job)["subdomain"] == "sentiment"


def test_pod_security_meets_the_restricted_standard():
    job = _job()
    pod = _pod(job)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert _trainer(job)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }


def test_termination_grace_period_comes_from_run_policy():
    assert _pod(_job())["terminationGracePeriodSeconds"] == 120
    assert _pod(_job(runPolicy={"terminationGracePeriodSeconds": 600}))["terminationGracePeriodSeconds"] == 600


def test_scheduling_fields_are_left_out_when_unset():
    pod = _pod(_job())
    for field in ("priorityClassName", "nodeSelector", "tolerations", "affinity", "schedulerName"):
        assert field not in pod


def test_scheduling_fields_pass_through():
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}]
            }
        }
    }
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    pod = _pod(
        _job(
            scheduling={
                "priorityClassName": "training-high",
                "nodeSelector": {"pool": "gpu"},
                "tolerations": tolerations,
                "affinity": affinity,
                "schedulerName": "volcano",
            }
        )
    )
    assert pod["priorityClassName"] == "training-high"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == tolerations
    assert pod["affinity"] == affinity
    assert pod["schedulerName"] == "volcano"


# --- the trainer container --------------------------------------------------------------------


def test_trainer_container_runs_the_trainer_on_the_mounted_config():
    container = _trainer(_job())
    assert container["name"] == "trainer"
    assert container["command"] == ["python", "-m", "finetune_trainer"]
    assert container["args"] == ["/etc/finetune/config.json"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_image_comes_from_the_spec_else_the_operator_default():
    config = OperatorConfig(default_image="registry.local/trainer:1.2.3", image_pull_policy="Always")
    default = _trainer(_job(config=config))
    assert default["image"] == "registry.local/trainer:1.2.3"
    assert default["imagePullPolicy"] == "Always"
    assert _trainer(_job(config=config, image="my/trainer:dev"))["image"] == "my/trainer:dev"


def test_resources_default_from_operator_config_with_memory_limit_equal_to_request():
    config = OperatorConfig(default_cpu="2", default_memory="8Gi")
    resources = _trainer(_job(config=config, resources={"gpusPerNode": 0}))["resources"]
    assert resources["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert resources["limits"]["memory"] == resources["requests"]["memory"]
    assert not any("gpu" in key for key in [*resources["requests"], *resources["limits"]])


def test_spec_resources_override_defaults_and_gpus_go_in_requests_and_limits():
    resources = _trainer(
        _job(
            resources={
                "cpu": 16,
                "memory": "64Gi",
                "gpusPerNode": 8,
                "gpuResourceName": "amd.com/gpu",
            }
        )
    )["resources"]
    assert resources["requests"] == {"cpu": "16", "memory": "64Gi", "amd.com/gpu": "8"}
    assert resources["limits"] == resources["requests"]


def test_default_spec_asks_for_one_nvidia_gpu():
    resources = _trainer(_job())["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["nvidia.com/gpu"] == "1"


# --- environment ------------------------------------------------------------------------------


def test_single_node_contract_env():
    env = _env_values(_job(resources={"gpusPerNode": 0}))
    assert env["FINETUNE_CONFIG"] == "/etc/finetune/config.json"
    assert env["FINETUNE_JOB_NAME"] == "sentiment"
    assert env["FINETUNE_JOB_NAMESPACE"] == "team-a"
    assert env["FINETUNE_TERMINATION_LOG"] == "/dev/termination-log"
    assert env["FINETUNE_TERMINATION_GRACE_SECONDS"] == "120"  # the pod's terminationGracePeriodSeconds
    assert env["HF_HOME"] == "/var/cache/finetune/huggingface"
    assert env["WORLD_SIZE"] == "1"
    assert env["NPROC_PER_NODE"] == env["PET_NPROC_PER_NODE"] == "1"
    assert env["NNODES"] == env["PET_NNODES"] == "1"
    assert "HF_HUB_OFFLINE" not in env


def test_multi_node_env_points_every_rank_at_rank_zero():
    job = _job(resources={"nodes": 4, "gpusPerNode": 8})
    env = _env_values(job)
    assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "sentiment-0.sentiment.team-a.svc"
    assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "29500"
    assert env["NNODES"] == env["PET_NNODES"] == "4"
    assert env["NPROC_PER_NODE"] == env["PET_NPROC_PER_NODE"] == "8"
    assert env["WORLD_SIZE"] == "32"


def test_a_single_process_trainer_uses_as_many_threads_as_its_cpu_limit():
    one = _env(_job(resources={"gpusPerNode": 0, "cpu": "2"}))
    assert one["OMP_NUM_THREADS"] == {
        "name": "OMP_NUM_THREADS",
        "valueFrom": {"resourceFieldRef": {"containerName": "trainer", "resource": "limits.cpu", "divisor": "1"}},
    }
    # Eight processes per node: torchrun's own default (one thread each) applies.
    assert "OMP_NUM_THREADS" not in _env(_job(resources={"gpusPerNode": 8}))


def test_node_rank_is_the_completion_index():
    env = _env(_job(resources={"nodes": 2}))
    for name in ("RANK", "NODE_RANK", "PET_NODE_RANK"):
        assert env[name] == {"name": name, "valueFrom": {"fieldRef": {"fieldPath": RANK_PATH}}}


def test_env_order_is_contract_then_operator_then_user_then_secrets():
    config = OperatorConfig(trainer_env={"HF_HUB_OFFLINE": "1"})
    job = _job(
        config=config,
        env=[
            {"name": "MY_FLAG", "value": "on"},
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
        ],
        secrets={"hfToken": {"name": "hub", "key": "tok"}},
    )
    names = [entry["name"] for entry in _trainer(job)["env"]]
    assert names[:4] == ["FINETUNE_CONFIG", "FINETUNE_JOB_NAME", "FINETUNE_JOB_NAMESPACE", "FINETUNE_VOLUME_MOUNTS"]
    assert names[-4:] == ["HF_HUB_OFFLINE", "MY_FLAG", "FROM_CM", "HF_TOKEN"]
    assert names.index("PET_NODE_RANK") < names.index("HF_HUB_OFFLINE")
    env = _env(job)
    assert env["MY_FLAG"] == {"name": "MY_FLAG", "value": "on"}
    assert env["FROM_CM"] == {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}


def test_env_names_are_unique_and_later_sources_win():
    config = OperatorConfig(trainer_env={"MASTER_ADDR": "127.0.0.1", "HF_HOME": "/cache/hf"})
    job = _job(config=config, env=[{"name": "HF_HOME", "value": "/mine"}])
    names = [entry["name"] for entry in _trainer(job)["env"]]
    assert len(names) == len(set(names))
    env = _env_values(job)
    assert env["MASTER_ADDR"] == "127.0.0.1"
    assert env["HF_HOME"] == "/mine"


def test_secrets_are_passed_by_reference_only():
    job = _job(secrets={"hfToken": {"name": "hub", "key": "tok"}, "s3Credentials": {"name": "aws"}})
    container = _trainer(job)
    assert _env(job)["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "tok"}}}
    assert container["envFrom"] == [{"secretRef": {"name": "aws"}}]


def test_no_secret_env_without_secrets():
    job = _job()
    assert "HF_TOKEN" not in _env(job)
    assert "envFrom" not in _trainer(job)


# --- volumes ----------------------------------------------------------------------------------


def _mounts(job):
    return {mount["name"]: mount for mount in _trainer(job)["volumeMounts"]}


def _volumes(job):
    return {volume["name"]: volume for volume in _pod(job)["volumes"]}


def test_config_and_scratch_volumes_are_always_mounted():
    job = _job(config=OperatorConfig(shm_size="4Gi"))
    volumes, mounts = _volumes(job), _mounts(job)
    assert volumes["config"] == {"name": "config", "configMap": {"name": "sentiment-config"}}
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/finetune", "readOnly": True}
    assert volumes["cache"]["emptyDir"] == {} and mounts["cache"]["mountPath"] == "/var/cache/finetune"
    assert volumes["tmp"]["emptyDir"] == {} and mounts["tmp"]["mountPath"] == "/tmp"
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    assert mounts["shm"]["mountPath"] == "/dev/shm"
    assert volumes["progress-token"]["secret"]["secretName"] == "sentiment-progress"
    assert mounts["progress-token"] == {
        "name": "progress-token",
        "mountPath": "/var/run/secrets/finetune/progress",
        "readOnly": True,
    }
    assert set(volumes) == set(mounts) == {"config", "progress-token", "cache", "tmp", "shm"}
    assert json.loads(_env_values(job)["FINETUNE_VOLUME_MOUNTS"]) == {}


def test_each_claim_is_mounted_once_and_only_the_output_claim_is_writable():
    job = _job(
        model={"source": "pvc://models/bert-base"},
        dataset={"train": "pvc://data/train.csv", "validation": "pvc://data/val.csv"},
        output={"uri": "pvc://results/sentiment"},
    )
    volumes, mounts = _volumes(job), _mounts(job)
    assert volumes["pvc-models"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert volumes["pvc-data"]["persistentVolumeClaim"] == {"claimName": "data", "readOnly": True}
    assert volumes["pvc-results"]["persistentVolumeClaim"] == {"claimName": "results"}
    assert mounts["pvc-models"] == {"name": "pvc-models", "mountPath": "/mnt/pvc/models", "readOnly": True}
    assert mounts["pvc-data"] == {"name": "pvc-data", "mountPath": "/mnt/pvc/data", "readOnly": True}
    assert mounts["pvc-results"] == {"name": "pvc-results", "mountPath": "/mnt/pvc/results", "readOnly": False}
    names = [volume["name"] for volume in _pod(job)["volumes"]]
    assert len(names) == len(set(names))


def test_volume_mounts_env_lists_exactly_the_mounted_claims():
    job = _job(
        model={"source": "pvc://models/bert-base"},
        dataset={"train": "s3://bucket/train.csv"},
        output={"uri": "pvc://models/finetuned"},
    )
    table = json.loads(_env_values(job)["FINETUNE_VOLUME_MOUNTS"])
    assert table == {"models": "/mnt/pvc/models"}
    claim_mounts = {m["mountPath"] for m in _trainer(job)["volumeMounts"] if m["mountPath"].startswith("/mnt/pvc/")}
    assert set(table.values()) == claim_mounts
    assert _mounts(job)["pvc-models"]["readOnly"] is False


def test_builders_return_fresh_objects():
    # Handlers adopt and mutate what builders return; two calls must not share nested dicts.
    first, second = _job(resources={"nodes": 2}), _job(resources={"nodes": 2})
    first["metadata"]["labels"]["x"] = "y"
    _env(first)["RANK"]["valueFrom"]["fieldRef"]["fieldPath"] = "changed"
    assert "x" not in second["metadata"]["labels"]
    assert _env(second)["RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == RANK_PATH
    assert _env(first)["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == RANK_PATH


# --- API validity -----------------------------------------------------------------------------

EVERYTHING = {
    "model": {"source": "pvc://models/bert-base"},
    "dataset": {"train": "pvc://data/train.csv", "retention": "s3://bucket/retain.csv", "validationSplit": 0.1},
    "output": {"uri": "pvc://results/sentiment"},
    "resources": {"nodes": 4, "gpusPerNode": 8, "cpu": "32", "memory": "256Gi"},
    "scheduling": {
        "queueName": "team-a",
        "priorityClassName": "high",
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"finetune.dev/job-name": "sentiment"}},
                        },
                    }
                ]
            }
        },
        "schedulerName": "volcano",
    },
    "runPolicy": {"activeDeadlineSeconds": 86400, "suspend": True},
    "secrets": {"hfToken": {"name": "hub"}, "s3Credentials": {"name": "aws"}},
    "env": [
        {"name": "NCCL_DEBUG", "value": "INFO"},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ],
}


@pytest.mark.parametrize("fields", [{}, EVERYTHING], ids=["minimal", "everything"])
def test_built_children_are_valid_kubernetes_objects(fields):
    spec = parse_spec({**copy.deepcopy(BASE), **fields}, "sentiment")
    config_map = build_config_map(spec, "sentiment", "team-a")
    children = [
        config_map,
        build_service(spec, "sentiment", "team-a"),
        build_job(spec, "sentiment", "team-a", config=CONFIG, config_hash=config_hash(config_map)),
    ]
    for child in children:
        try:
            kubernetes_validate.validate(child, "1.31", strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{child['kind']}: {error.message} at {'.'.join(map(str, error.absolute_path))}")


def test_progress_reporting_env_points_at_the_operator_with_the_jobs_token_file():
    env = _env_values(
        _job(config=OperatorConfig(progress_base_url="http://op.sys.svc:8081", progress_interval_seconds=7))
    )
    assert env["FINETUNE_PROGRESS_URL"] == "http://op.sys.svc:8081/progress/v1/namespaces/team-a/finetunejobs/sentiment"
    assert env["FINETUNE_PROGRESS_TOKEN_FILE"] == "/var/run/secrets/finetune/progress/token"
    assert env["FINETUNE_PROGRESS_INTERVAL_SECONDS"] == "7"
    assert env["FINETUNE_METRICS_PORT"] == "9400"


def test_reporting_can_be_switched_off_and_the_trainer_metrics_port_is_named():
    job = _job(config=OperatorConfig(progress_base_url=""))
    assert "FINETUNE_PROGRESS_URL" not in _env_values(job)
    ports = {p["name"]: p["containerPort"] for p in _trainer(job)["ports"]}
    assert ports["metrics"] == 9400
    no_metrics = _job(config=OperatorConfig(trainer_metrics_port=0))
    assert "metrics" not in {p["name"] for p in _trainer(no_metrics)["ports"]}
