"""The operator's sandbox pod is the Deployment's pod, with the sandbox's kubeconfig in place of a ServiceAccount."""

from finetune_sandbox.cluster import MANIFESTS
from finetune_sandbox.operator_pod import KUBECONFIG_SECRET, deployment_manifest, kubeconfig_secret, operator_pod

DEPLOYMENT = deployment_manifest(MANIFESTS / "operator" / "deployment.yaml")


def build(**settings: str) -> dict:
    return operator_pod(
        DEPLOYMENT,
        image="localhost/finetune-operator:0.1.0",
        name="finetune-operator-0",
        settings=settings,
        args=["--all-namespaces", "--liveness", ""],
    )


def test_the_pod_keeps_the_deployments_user_read_only_root_and_tmp_volume():
    pod = build()
    template = DEPLOYMENT["spec"]["template"]["spec"]
    assert pod["metadata"]["namespace"] == "finetune-system"
    assert pod["spec"]["securityContext"] == template["securityContext"]
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["image"] == "localhost/finetune-operator:0.1.0"
    assert container["args"] == ["--all-namespaces", "--liveness", ""]


def test_the_kubeconfig_comes_from_a_secret_and_no_service_account_token_is_mounted():
    pod = build()
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod["spec"]
    assert {"name": "kubeconfig", "secret": {"secretName": KUBECONFIG_SECRET}} in pod["spec"]["volumes"]
    (container,) = pod["spec"]["containers"]
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "kubeconfig")
    assert env["KUBECONFIG"] == mount["mountPath"] + "/config" and mount["readOnly"] is True


def test_settings_replace_the_deployments_env_by_name_and_keep_the_rest():
    pod = build(FINETUNE_STATUS_INTERVAL_SECONDS="2", FINETUNE_DEFAULT_IMAGE="localhost/finetune-trainer:0.1.0-cpu")
    (container,) = pod["spec"]["containers"]
    names = [entry["name"] for entry in container["env"]]
    assert len(names) == len(set(names))
    env = {entry["name"]: entry for entry in container["env"]}
    assert env["FINETUNE_STATUS_INTERVAL_SECONDS"]["value"] == "2"
    assert env["FINETUNE_DEFAULT_IMAGE"]["value"] == "localhost/finetune-trainer:0.1.0-cpu"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "livenessProbe" not in container
    # The manifest itself is left as it was.
    assert DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["image"].startswith("ghcr.io/")


def test_the_kubeconfig_secret_holds_the_file_base64_encoded():
    import base64

    secret = kubeconfig_secret("finetune-system", "apiVersion: v1\n")
    assert base64.b64decode(secret["data"]["config"]) == b"apiVersion: v1\n"
