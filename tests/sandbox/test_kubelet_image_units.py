"""The image runtime's pure planner: Kubernetes' rules for command, env, user, root and mounts (no buildah)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from finetune_sandbox.kubelet.image_runtime.command import launch_argv, resolve_in_container
from finetune_sandbox.kubelet.image_runtime.plan import (
    DEFAULT_PATH,
    Account,
    ContainerConfigError,
    ImageConfig,
    parse_group,
    parse_passwd,
    plan_container,
)
from finetune_sandbox.kubelet.volumes import Mount

IMAGE = ImageConfig(
    entrypoint=("python", "-m", "finetune_trainer"),
    cmd=("/etc/finetune/config.json",),
    env=("PATH=/opt/venv/bin:/usr/bin", "HF_HOME=/cache", "MODE=image"),
    working_dir="/home/trainer",
    user="10001:10001",
)
TERMINATION = Path("/data/pods/ns/p/termination/main")


def pod(container: dict | None = None, security: dict | None = None, volumes: list | None = None) -> dict:
    spec = {"containers": [{"name": "main", "image": "img:1", **(container or {})}], "volumes": volumes or []}
    if security is not None:
        spec["securityContext"] = security
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}, "spec": spec}


def plan(
    container: dict | None = None,
    *,
    image: ImageConfig = IMAGE,
    env: dict | None = None,
    security: dict | None = None,
    mounts: list[Mount] | None = None,
    volumes: list | None = None,
    **kwargs,
):
    body = pod(container, security, volumes)
    return plan_container(body, body["spec"]["containers"][0], image, env or {}, mounts or [], TERMINATION, **kwargs)


# --- command and args -----------------------------------------------------------------------------------------


def test_no_command_no_args_runs_entrypoint_then_cmd():
    assert plan().argv == ["python", "-m", "finetune_trainer", "/etc/finetune/config.json"]


def test_args_replace_cmd_but_keep_the_entrypoint():
    assert plan({"args": ["/other.json", "--x"]}).argv == ["python", "-m", "finetune_trainer", "/other.json", "--x"]


def test_command_replaces_entrypoint_and_drops_cmd():
    assert plan({"command": ["sh", "-c", "true"]}).argv == ["sh", "-c", "true"]


def test_command_and_args_together():
    assert plan({"command": ["echo"], "args": ["a", "b"]}).argv == ["echo", "a", "b"]


def test_references_in_command_and_args_expand_from_the_container_env_only():
    result = plan({"command": ["echo", "$(GREETING)"], "args": ["$(MODE)", "$$(GREETING)"]}, env={"GREETING": "hello"})
    # MODE comes from the image's Env: Kubernetes expands only what the pod spec defines.
    assert result.argv == ["echo", "hello", "$(MODE)", "$(GREETING)"]


def test_nothing_to_run_is_a_create_container_error():
    with pytest.raises(ContainerConfigError) as raised:
        plan(image=ImageConfig())
    assert raised.value.reason == "CreateContainerError"
    assert "no command specified" in str(raised.value)


# --- env ------------------------------------------------------------------------------------------------------


def test_env_is_image_env_then_pod_env_then_kubelet_extra_env():
    result = plan(env={"MODE": "pod", "TOKEN": "t", "HF_HOME": "/x"}, extra_env={"TOKEN": "sandbox"})
    assert result.env["PATH"] == "/opt/venv/bin:/usr/bin"
    assert (result.env["MODE"], result.env["HF_HOME"], result.env["TOKEN"]) == ("pod", "/x", "sandbox")
    assert result.env["HOSTNAME"] == "p"
    keys = list(result.env)
    assert keys.index("HOSTNAME") < keys.index("PATH") < keys.index("TOKEN")


def test_default_path_home_and_hostname():
    bare = plan(image=ImageConfig(cmd=("true",)))
    assert bare.env["PATH"] == DEFAULT_PATH
    assert bare.env["HOME"] == "/"
    named = plan(
        image=ImageConfig(cmd=("true",), user="trainer"), accounts={"trainer": Account(10001, 10002, "/home/trainer")}
    )
    assert named.env["HOME"] == "/home/trainer"
    assert plan(env={"HOME": "/mine"}).env["HOME"] == "/mine"
    body = pod()
    body["spec"]["hostname"] = "worker-0"
    assert plan_container(body, body["spec"]["containers"][0], IMAGE, {}, [], TERMINATION).env["HOSTNAME"] == "worker-0"


def test_volume_paths_are_not_rewritten_in_env_or_args():
    mounts = [Mount("/mnt/pvc/models", Path("/host/pvcs/ns/models"))]
    result = plan(
        {"args": ["/mnt/pvc/models/x"]},
        env={"OUT": "/mnt/pvc/models/out"},
        mounts=mounts,
        volumes=[{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
    )
    assert result.argv[-1] == "/mnt/pvc/models/x"
    assert result.env["OUT"] == "/mnt/pvc/models/out"


# --- user ---------------------------------------------------------------------------------------------------


def test_image_user_applies_when_the_pod_sets_none():
    result = plan()
    assert (result.uid, result.gid, result.groups) == (10001, 10001, [10001])


def test_image_user_by_name_and_group_name():
    accounts = parse_passwd("root:x:0:0:root:/root:/bin/sh\ntrainer:x:10001:10003::/home/trainer:/usr/sbin/nologin\n")
    groups = parse_group("root:x:0:\nml:x:2000:trainer\n")
    assert (plan(image=ImageConfig(cmd=("true",), user="trainer"), accounts=accounts).gid) == 10003
    result = plan(image=ImageConfig(cmd=("true",), user="trainer:ml"), accounts=accounts, groups=groups)
    assert (result.uid, result.gid) == (10001, 2000)
    with pytest.raises(ContainerConfigError, match="unable to find user nobody2"):
        plan(image=ImageConfig(cmd=("true",), user="nobody2"), accounts=accounts)


def test_pod_security_context_overrides_the_image_user_and_container_overrides_the_pod():
    pod_level = plan(security={"runAsUser": 1000, "runAsGroup": 1001, "fsGroup": 1002, "supplementalGroups": [7]})
    assert (pod_level.uid, pod_level.gid, pod_level.groups) == (1000, 1001, [1001, 1002, 7])
    container_level = plan(
        {"securityContext": {"runAsUser": 2000, "runAsGroup": 2001}}, security={"runAsUser": 1000, "runAsGroup": 1001}
    )
    assert (container_level.uid, container_level.gid) == (2000, 2001)


def test_run_as_user_without_group_takes_the_passwd_group_or_root():
    # containerd: the image's USER group is ignored once runAsUser is set.
    assert plan(security={"runAsUser": 1000}).gid == 0
    accounts = {"app": Account(1000, 1500, "/home/app")}
    assert plan(security={"runAsUser": 1000}, accounts=accounts).gid == 1500


def test_run_as_non_root_refuses_root_and_unverifiable_names():
    with pytest.raises(ContainerConfigError) as raised:
        plan({"securityContext": {"runAsNonRoot": True}}, image=ImageConfig(cmd=("true",)))
    assert raised.value.reason == "CreateContainerConfigError"
    assert "image will run as root" in str(raised.value)
    with pytest.raises(ContainerConfigError, match="non-numeric user"):
        plan(security={"runAsNonRoot": True}, image=ImageConfig(cmd=("true",), user="trainer"))
    assert plan(security={"runAsNonRoot": True}).uid == 10001


# --- root, working dir, mounts ------------------------------------------------------------------------------


def test_read_only_root_only_from_the_container_security_context():
    assert plan({"securityContext": {"readOnlyRootFilesystem": True}}).read_only_root
    assert not plan().read_only_root


def test_working_dir_pod_over_image_over_root():
    assert plan().working_dir == "/home/trainer"
    assert plan({"workingDir": "/work"}).working_dir == "/work"
    assert plan(image=ImageConfig(cmd=("true",))).working_dir == "/"


def test_mounts_runtime_volumes_and_termination_file_parents_first():
    mounts = [
        Mount("/dev/shm", Path("/v/shm"), volume="shm"),
        Mount("/etc/finetune", Path("/v/config"), read_only=True, volume="config"),
        Mount("/mnt/pvc/models", Path("/pvcs/models"), volume="models"),
        Mount("/mnt/pvc/data", Path("/pvcs/data"), volume="data"),
    ]
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}}]
    result = plan(mounts=mounts, volumes=volumes)
    targets = [mount.target for mount in result.mounts]
    depths = [len(target.strip("/").split("/")) for target in targets]
    assert depths == sorted(depths)
    by_target = {}
    for mount in result.mounts:
        by_target.setdefault(mount.target, []).append(mount)
    # The runtime's /dev/shm first, the pod's emptyDir over it.
    assert [(mount.kind, mount.source) for mount in by_target["/dev/shm"]][-1] == ("bind", "/v/shm")
    assert by_target["/dev"][0].kind == "dev"
    assert by_target["/proc"][0].kind == "rbind"
    assert by_target["/sys"][0].read_only
    assert by_target["/etc/finetune"][0].read_only
    assert not by_target["/mnt/pvc/models"][0].read_only
    assert by_target["/mnt/pvc/data"][0].read_only  # the claim's own readOnly
    assert by_target["/etc/resolv.conf"][0].optional and by_target["/etc/hosts"][0].read_only
    assert by_target["/dev/termination-log"][0].source == str(TERMINATION)


def test_termination_message_path_is_where_the_container_says():
    result = plan({"terminationMessagePath": "/tmp/done"})
    assert [mount.source for mount in result.mounts if mount.target == "/tmp/done"] == [str(TERMINATION)]
    assert not any(mount.target == "/dev/termination-log" for mount in result.mounts)


# --- the command line -----------------------------------------------------------------------------------------


def script_of(argv: list[str]) -> str:
    assert argv[:6] == ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    return argv[6]


def test_launch_line_enters_the_rootfs_as_the_user_with_only_the_planned_env():
    result = plan(
        {"command": ["python3", "-c", "print('a b')"]},
        env={"X": "it's"},
        security={"runAsUser": 1000, "fsGroup": 1000},
        mounts=[Mount("/data", Path("/host/data"))],
    )
    script = script_of(launch_argv(result, "/roots/c1"))
    lines = script.splitlines()
    last = shlex.split(lines[-1])
    assert last[:5] == ["exec", "chroot", "--userspec=1000:0", "--groups=0,1000", "$R"]
    assert last[5:9] == ["/usr/bin/env", "-i", "-C", "/home/trainer"]
    assert "X=it's" in last and last[-3:] == ["python3", "-c", "print('a b')"]
    assert "R=/roots/c1" in lines
    assert 'mount --bind /host/data "$R"/data' in lines
    assert 'mount --bind /data/pods/ns/p/termination/main "$R"/dev/termination-log' in lines
    assert not any('remount,bind,ro "$R"' == line.split(" ", 2)[-1] for line in lines)


def test_read_only_root_is_remounted_after_its_mount_points_are_made_and_before_the_volumes():
    result = plan(
        {"securityContext": {"readOnlyRootFilesystem": True}},
        mounts=[Mount("/mnt/pvc/models", Path("/pvcs/models")), Mount("/tmp", Path("/v/tmp"))],
    )
    lines = script_of(launch_argv(result, "/r")).splitlines()
    remount = lines.index('mount -o remount,bind,ro "$R"')
    assert lines.index('mount --bind "$R" "$R"') < remount
    assert lines.index('mp /pvcs/models "$R"/mnt/pvc/models') < remount
    assert lines.index('mkdir -p "$R"/home/trainer') < remount
    assert lines.index('mount --bind /pvcs/models "$R"/mnt/pvc/models') > remount
    # Inside the runtime's tmpfs /dev: made after /dev is mounted, never in the host's /dev.
    dev = 'mount -t tmpfs -o nosuid,strictatime,mode=755,size=65536k tmpfs "$R"/dev'
    assert lines.index('mp /dev/null "$R"/dev/null') > lines.index(dev)
    assert lines.index('mp /data/pods/ns/p/termination/main "$R"/dev/termination-log') > remount
    assert 'mount -o remount,bind,ro "$R"/sys' in lines


def test_a_termination_file_inside_a_volume_gets_its_mount_point_after_the_volume():
    result = plan({"terminationMessagePath": "/tmp/term"}, mounts=[Mount("/tmp", Path("/v/tmp"))])
    lines = script_of(launch_argv(result, "/r")).splitlines()
    volume = lines.index('mount --bind /v/tmp "$R"/tmp')
    assert lines.index('mp /data/pods/ns/p/termination/main "$R"/tmp/term') > volume


def test_image_symlinks_are_resolved_inside_the_rootfs():
    links = {"/r/var/run": "/run", "/r/lib": "usr/lib", "/v/cache/up": "../../etc"}
    readlink = links.get
    assert resolve_in_container("/var/run/secrets/x", "/r", [], readlink) == "/run/secrets/x"
    assert resolve_in_container("/lib/python3", "/r", [], readlink) == "/usr/lib/python3"
    # Inside a mounted volume, a link is read in the volume's folder; ".." never climbs above the root.
    assert resolve_in_container("/cache/up/passwd", "/r", [("/cache", "/v/cache")], readlink) == "/etc/passwd"
    result = plan(mounts=[Mount("/var/run/secrets/finetune/progress", Path("/v/token"))])
    lines = script_of(launch_argv(result, "/r", readlink)).splitlines()
    assert 'mount --bind /v/token "$R"/run/secrets/finetune/progress' in lines
    with pytest.raises(ContainerConfigError, match="symbolic links"):
        resolve_in_container("/loop", "/r", [], {"/r/loop": "/loop"}.get)


def test_image_config_from_buildah_inspect():
    inspect = {
        "FromImageID": "abc",
        "OCIv1": {"config": {"Entrypoint": ["python"], "Cmd": None, "Env": ["A=1"], "WorkingDir": "/w", "User": "1:2"}},
    }
    assert ImageConfig.from_inspect(inspect) == ImageConfig(("python",), (), ("A=1",), "/w", "1:2", "sha256:abc")
