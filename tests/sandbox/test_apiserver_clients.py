"""Real clients against the sandbox API server: the official `kubernetes` client, kubectl and a Kopf operator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import threading

import pytest
import yaml
from finetune_sandbox.apiserver.testing import RawClient
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from test_apiserver_crd import WIDGET_CRD

KUBECTL = os.path.join(os.path.dirname(sys.executable), "kubectl")


@pytest.fixture
def kubeconfig(apiserver, tmp_path):
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")


async def test_kubeconfig_names_the_sandbox_context(apiserver, kubeconfig):
    with open(kubeconfig) as f:
        cfg = yaml.safe_load(f)
    assert cfg["current-context"] == "ftjob-sandbox"
    assert cfg["clusters"][0]["cluster"]["server"] == apiserver.url
    assert cfg["contexts"][0]["context"]["namespace"] == "default"


async def test_official_client_crud_and_watch(kubeconfig):
    api_client = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api_client)

    def crud():
        created = core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm", labels={"app": "x"}), data={"k": "1"})
        )
        assert created.metadata.uid and created.metadata.resource_version
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
        assert err.value.status == 409
        core.patch_namespaced_config_map("cm", "default", {"data": {"k": "2"}})
        listed = core.list_namespaced_config_map("default", label_selector="app=x")
        assert [(i.metadata.name, i.data) for i in listed.items] == [("cm", {"k": "2"})]
        stale = created
        stale.data = {"k": "3"}
        with pytest.raises(ApiException) as err:
            core.replace_namespaced_config_map("cm", "default", stale)
        assert err.value.status == 409
        core.delete_namespaced_config_map("cm", "default")
        with pytest.raises(ApiException) as err:
            core.read_namespaced_config_map("cm", "default")
        assert err.value.status == 404
        return listed.metadata.resource_version

    rv = await asyncio.to_thread(crud)

    def stream():
        events = []
        for event in watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2
        ):
            events.append((event["type"], event["object"].metadata.name))
            break
        return events

    assert await asyncio.to_thread(stream) == [("DELETED", "cm")]
    started = threading.Event()

    def stream_new():
        started.set()
        return [
            (e["type"], e["object"].metadata.name)
            for e in watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=1)
        ]

    task = asyncio.create_task(asyncio.to_thread(stream_new))
    await asyncio.to_thread(started.wait)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(
        core.create_namespaced_pod,
        "default",
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "m", "image": "x"}]}},
    )
    assert ("ADDED", "p") in await task
    api_client.close()


async def _kubectl(kubeconfig, *args, stdin=None):
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_kubectl_apply_get_and_delete(kubeconfig, tmp_path):
    crd_file, widget_file = tmp_path / "crd.yaml", tmp_path / "widget.yaml"
    crd_file.write_text(yaml.safe_dump(WIDGET_CRD))
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
    widget_file.write_text(yaml.safe_dump(widget))
    rc, out, err = await _kubectl(kubeconfig, "apply", "-f", str(crd_file))
    assert rc == 0, err
    rc, out, err = await _kubectl(kubeconfig, "apply", "-f", str(widget_file))
    assert (rc, out.strip()) == (0, "widget.example.com/w1 created"), err
    widget["spec"]["size"] = 4
    widget_file.write_text(yaml.safe_dump(widget))
    rc, out, err = await _kubectl(kubeconfig, "apply", "-f", str(widget_file))
    assert (rc, out.strip()) == (0, "widget.example.com/w1 configured"), err
    rc, out, err = await _kubectl(kubeconfig, "get", "wdg")
    assert rc == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NAME", "SIZE", "READY", "AGE"] and row.split()[:2] == ["w1", "4"]
    rc, out, err = await _kubectl(kubeconfig, "get", "widgets", "-o", "json")
    items = json.loads(out)["items"]
    assert [(i["metadata"]["name"], i["spec"]) for i in items] == [("w1", {"size": 4, "color": "red"})]
    assert "kubectl.kubernetes.io/last-applied-configuration" in items[0]["metadata"]["annotations"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**widget, "metadata": {"name": "w2"}, "spec": {"size": 30}}))
    rc, out, err = await _kubectl(kubeconfig, "apply", "-f", str(bad))
    assert rc != 0 and "spec.size" in err
    rc, out, err = await _kubectl(kubeconfig, "apply", "--dry-run=server", "-f", str(widget_file))
    assert rc == 0, err
    rc, out, err = await _kubectl(
        kubeconfig,
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "m", "image": "x"}]},
            }
        ),
    )
    assert rc == 0, err
    rc, out, err = await _kubectl(kubeconfig, "get", "pods")
    assert out.split()[:9] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "p", "0/1", "Pending", "0"]
    rc, out, err = await _kubectl(kubeconfig, "delete", "-f", str(widget_file))
    assert rc == 0 and "deleted" in out, err
    rc, out, err = await _kubectl(kubeconfig, "get", "widgets")
    assert rc == 0 and "No resources found" in err


async def test_kubectl_applies_deploy_manifests_idempotently(kubeconfig):
    manifests = yaml.safe_dump_all(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "op"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "op", "namespace": "ops"},
                "spec": {
                    "selector": {"matchLabels": {"app": "op"}},
                    "template": {
                        "metadata": {"labels": {"app": "op"}},
                        "spec": {"containers": [{"name": "op", "image": "x"}]},
                    },
                },
            },
        ]
    )
    rc, out, err = await _kubectl(kubeconfig, "apply", "-f", "-", stdin=manifests)
    assert rc == 0 and out.count("created") == 3, err
    rc, out, err = await _kubectl(kubeconfig, "apply", "-f", "-", stdin=manifests)
    assert rc == 0 and out.count("unchanged") == 3, out + err


async def test_kubectl_typed_create_commands_send_protobuf_the_server_reads(kubeconfig):
    for args in (
        ["create", "namespace", "team"],
        ["create", "configmap", "settings", "-n", "team", "--from-literal=a=b"],
        ["create", "secret", "generic", "token", "-n", "team", "--from-literal=t=abc"],
    ):
        rc, out, err = await _kubectl(kubeconfig, *args)
        assert rc == 0, err
    rc, out, err = await _kubectl(kubeconfig, "get", "configmap,secret", "-n", "team", "-o", "json")
    items = {i["kind"]: i for i in json.loads(out)["items"]}
    assert items["ConfigMap"]["data"] == {"a": "b"} and "generateName" not in items["ConfigMap"]["metadata"]
    assert items["Secret"]["data"] == {"t": "YWJj"} and items["Secret"]["type"] == "Opaque"


OPERATOR = textwrap.dedent("""
    import kopf

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.watching.server_timeout = 10
        settings.watching.client_timeout = 15
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
        settings.posting.level = 0

    @kopf.on.create("example.com", "v1", "widgets")
    def created(spec, patch, **_):
        patch.status["observedSize"] = spec["size"]
        patch.status["conditions"] = [{"type": "Ready", "status": "True"}]

    @kopf.on.delete("example.com", "v1", "widgets")
    def deleted(name, logger, **_):
        logger.info(f"cleaned up after {name}")
""")


async def test_kopf_operator_handles_creation_and_deletion_of_a_custom_resource(apiserver, kubeconfig, tmp_path):
    async with RawClient(apiserver.url) as http:
        await http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
        operator = tmp_path / "operator.py"
        operator.write_text(OPERATOR)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "-A",
            str(operator),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await http.post(
                "/apis/example.com/v1/namespaces/default/widgets", {"metadata": {"name": "w"}, "spec": {"size": 5}}
            )
            path = "/apis/example.com/v1/namespaces/default/widgets/w"
            for _ in range(300):
                _, obj = await http.get(path)
                if obj.get("status", {}).get("observedSize") == 5:
                    break
                await asyncio.sleep(0.1)
            assert obj.get("status", {}).get("observedSize") == 5, obj
            assert obj["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
            assert any(a.startswith("kopf.zalando.org/") for a in obj["metadata"]["annotations"])
            assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
            status, _ = await http.delete(path)
            assert status == 202
            for _ in range(300):
                if (await http.get(path))[0] == 404:
                    break
                await asyncio.sleep(0.1)
            assert (await http.get(path))[0] == 404  # Kopf ran its delete handler and released the finalizer
        finally:
            proc.terminate()
            try:
                output, _ = await asyncio.wait_for(proc.communicate(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                output, _ = await proc.communicate()
        text = output.decode()
        assert "Traceback" not in text and "inconsistencies" not in text, text
        print(text)
