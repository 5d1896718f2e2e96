from finetune_operator.builders import build_service
from finetune_operator.spec import parse_spec

SPEC = parse_spec(
    {
        "task": "text-classification",
        "model": {"source": "hf://org/model"},
        "dataset": {"train": "s3://bucket/train.csv"},
        "output": {"uri": "s3://bucket/out"},
        "resources": {"nodes": 4},
    }
)


def test_service_is_headless_and_publishes_not_ready_pods():
    service = build_service(SPEC, "sentiment", "team-a")
    assert service["apiVersion"] == "v1" and service["kind"] == "Service"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True


def test_service_is_named_after_the_job_and_selects_its_pods():
    service = build_service(SPEC, "sentiment", "team-a")
    assert service["metadata"]["name"] == "sentiment"
    assert service["metadata"]["namespace"] == "team-a"
    assert service["metadata"]["labels"]["finetune.dev/job-name"] == "sentiment"
    assert service["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "finetune-operator"
    assert service["spec"]["selector"] == {"finetune.dev/job-name": "sentiment"}


def test_service_exposes_the_rendezvous_port():
    (port,) = build_service(SPEC, "sentiment", "team-a")["spec"]["ports"]
    assert port["name"] == "rendezvous"
    assert port["port"] == 29500 and port["targetPort"] == 29500
