"""The `ftjob` command as a user runs it: a subprocess against a sandbox, and local training without one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from finetune_sandbox.cluster import CRD_FILE, wait_for
from sandbox_support import Cluster, finetunejob, kubectl_binary, write_sentiment_csv

pytestmark = pytest.mark.e2e


def ftjob_binary() -> str:
    return shutil.which("ftjob") or str(Path(sys.executable).with_name("ftjob"))


def ftjob(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ftjob_binary(), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def table_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


# -- ftjob sandbox up / down -----------------------------------------------------------------------------

NO_SANDBOX = "no sandbox is running; if you started one with --data-dir DIR, run `ftjob sandbox down --data-dir DIR`"


@pytest.fixture()
def user_env(tmp_path: Path) -> dict[str, str]:
    """The environment for `ftjob sandbox`: its per-user records in the test's folder, never the real user's."""
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}


def records(env: dict[str, str]) -> list[dict]:
    return [json.loads(p.read_text()) for p in (Path(env["XDG_RUNTIME_DIR"]) / "finetune-sandbox").glob("*.json")]


def sandbox_up(data_dir: Path, env: dict[str, str], *options: str) -> subprocess.Popen[str]:
    """`ftjob sandbox up`, returned once it serves and has recorded itself."""
    up = subprocess.Popen(
        [ftjob_binary(), "sandbox", "up", "--data-dir", str(data_dir), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    recorded = lambda: any(r["pid"] == up.pid for r in records(env))  # noqa: E731
    wait_for(lambda: recorded() or up.poll() is not None, 60, message="`ftjob sandbox up` to record its sandbox")
    assert up.poll() is None, up.stdout.read()
    return up


def stop(up: subprocess.Popen[str]) -> None:
    if up.poll() is None:
        up.kill()
        up.wait()


def test_sandbox_up_serves_kubectl_and_the_operator_and_down_stops_everything(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    data_dir = tmp_path / "cluster"
    pid_file, kubeconfig = data_dir / "sandbox.pid", data_dir / "kubeconfig"
    up = subprocess.Popen(
        [ftjob_binary(), "sandbox", "up", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=user_env,
    )
    try:
        # The pid file is written once the API server serves and the operator was started.
        wait_for(lambda: pid_file.exists() or up.poll() is not None, 60, message="the sandbox pid file")
        assert up.poll() is None, up.stdout.read()
        assert int(pid_file.read_text()) == up.pid
        operator_processes = [
            p for p in psutil.Process(up.pid).children(recursive=True) if "finetune_operator" in " ".join(p.cmdline())
        ]
        assert operator_processes, "`ftjob sandbox up` did not start the operator"

        namespaces = kubectl(kubeconfig, "get", "ns")
        assert namespaces.returncode == 0, namespaces.stderr
        assert "default" in [row[0] for row in table_rows(namespaces.stdout)]
        applied = kubectl(kubeconfig, "apply", "-f", str(CRD_FILE))
        assert applied.returncode == 0, applied.stderr
        assert "customresourcedefinition.apiextensions.k8s.io/finetunejobs.finetune.dev" in applied.stdout
        empty = kubectl(kubeconfig, "get", "ftj", "-A")
        assert empty.returncode == 0 and "No resources found" in empty.stderr, empty

        # A queued job needs no trainer, yet shows the operator inside `sandbox up` reconciles it.
        assert kubectl(kubeconfig, "create", "namespace", "team-a").returncode == 0
        job = finetunejob("waits", "team-a", scheduling={"queueName": "team-a-queue"})
        assert kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(job)).returncode == 0

        def queued() -> bool:
            rows = table_rows(kubectl(kubeconfig, "get", "ftj", "-A").stdout)
            return any(row[:3] == ["team-a", "waits", "Queued"] for row in rows[1:])

        wait_for(queued, 60, message="the operator to mark the job Queued")

        down = ftjob("sandbox", "down", "--data-dir", str(data_dir), env=user_env)
        assert down.returncode == 0, down.stderr
        assert up.wait(timeout=10) == 0
        assert not pid_file.exists()
        assert records(user_env) == []
        _, alive = psutil.wait_procs(operator_processes, timeout=10)
        assert not alive, f"the operator outlived `ftjob sandbox down`: {alive}"
        assert kubectl(kubeconfig, "get", "ns", "--request-timeout=3s").returncode != 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_sandbox_down_without_a_running_sandbox_exits_2_and_says_so(tmp_path: Path, user_env: dict[str, str]) -> None:
    down = ftjob("sandbox", "down", "--data-dir", str(tmp_path), env=user_env)

    assert down.returncode == 2
    assert f"no sandbox is running from {tmp_path}" in down.stderr
    assert "Traceback" not in down.stderr


def test_sandbox_down_finds_the_sandbox_up_started_in_another_folder(tmp_path: Path, user_env: dict[str, str]) -> None:
    """Issue 14: `up --data-dir DIR`, then a bare `down` from anywhere stops it."""
    data_dir, elsewhere = tmp_path / "runs" / "cluster", tmp_path / "elsewhere"
    elsewhere.mkdir()
    up = sandbox_up(data_dir, user_env, "--no-operator")
    try:
        down = ftjob("sandbox", "down", env=user_env, cwd=elsewhere)

        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == f"stopping the sandbox from {data_dir} (pid {up.pid})"
        assert up.wait(timeout=30) == 0
        assert "Ctrl-C or `ftjob sandbox down` stops it." in up.stdout.read()
        assert not (data_dir / "sandbox.pid").exists()
        assert records(user_env) == []
        again = ftjob("sandbox", "down", env=user_env, cwd=elsewhere)
        assert again.returncode == 2
        assert again.stderr.strip() == f"ftjob: {NO_SANDBOX}"
    finally:
        stop(up)


def test_sandbox_down_removes_the_record_of_a_sandbox_that_was_killed(tmp_path: Path, user_env: dict[str, str]) -> None:
    data_dir = tmp_path / "cluster"
    up = sandbox_up(data_dir, user_env, "--no-operator")
    up.kill()  # no chance to remove its pid file and record
    up.wait()

    down = ftjob("sandbox", "down", env=user_env, cwd=tmp_path)

    assert down.returncode == 0, down.stderr
    assert f"the sandbox from {data_dir} (pid {up.pid}) is no longer running; removed its record" in down.stdout
    assert records(user_env) == []
    assert not (data_dir / "sandbox.pid").exists()
    assert ftjob("sandbox", "down", env=user_env, cwd=tmp_path).returncode == 2


def test_sandbox_down_with_several_running_names_each_data_dir(tmp_path: Path, user_env: dict[str, str]) -> None:
    ups = [sandbox_up(tmp_path / name, user_env, "--no-operator") for name in ("one", "two")]
    try:
        down = ftjob("sandbox", "down", env=user_env, cwd=tmp_path)

        assert down.returncode == 2
        assert "2 sandboxes are running; say which one to stop:" in down.stderr
        for name in ("one", "two"):
            assert f"ftjob sandbox down --data-dir {tmp_path / name}\n" in down.stderr + "\n"
        assert all(up.poll() is None for up in ups)

        # --data-dir of a folder with no sandbox names the ones that run.
        missing = ftjob("sandbox", "down", "--data-dir", str(tmp_path / "three"), env=user_env)
        assert missing.returncode == 2
        assert f"no sandbox is running from {tmp_path / 'three'}; running: `" in missing.stderr
        assert f"`ftjob sandbox down --data-dir {tmp_path / 'one'}`" in missing.stderr

        # A second `up` on a folder in use is refused.
        twice = ftjob("sandbox", "up", "--data-dir", str(tmp_path / "one"), "--no-operator", env=user_env)
        assert twice.returncode == 2
        assert f"a sandbox is already running from {tmp_path / 'one'} (pid {ups[0].pid})" in twice.stderr

        assert ftjob("sandbox", "down", "--data-dir", str(tmp_path / "one"), env=user_env).returncode == 0
        assert ups[0].wait(timeout=30) == 0
        assert ftjob("sandbox", "down", env=user_env, cwd=tmp_path).returncode == 0
        assert ups[1].wait(timeout=30) == 0
    finally:
        for up in ups:
            stop(up)


# -- get / describe / logs against the session cluster ------------------------------------------------------


@pytest.fixture(scope="module")
def cli_team(cluster: Cluster, tiny_model_source: Path) -> str:
    """A namespace with one job that succeeded and one that waits for a queue (so it has no pods)."""
    namespace = cluster.namespace()
    shutil.copytree(tiny_model_source, cluster.pvc_dir(namespace, "models") / "tiny-bert")
    write_sentiment_csv(cluster.pvc_dir(namespace, "datasets") / "sentiment" / "train.csv")
    cluster.apply(finetunejob("cli-sentiment", namespace))
    cluster.apply(finetunejob("cli-queued", namespace, scheduling={"queueName": "cli-queue"}))
    status = cluster.wait_phase(namespace, "cli-sentiment", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status
    cluster.wait_phase(namespace, "cli-queued", "Queued", timeout=60)
    return namespace


def test_get_lists_the_namespace_jobs_with_phase_and_queue(cluster: Cluster, cli_team: str) -> None:
    result = ftjob("--kubeconfig", str(cluster.kubeconfig), "get", "-n", cli_team)

    assert result.returncode == 0, result.stderr
    header, *rows = table_rows(result.stdout)
    assert header[:3] == ["NAMESPACE", "NAME", "PHASE"]
    by_name = {row[1]: row for row in rows}
    assert set(by_name) == {"cli-sentiment", "cli-queued"}
    assert by_name["cli-sentiment"][:3] == [cli_team, "cli-sentiment", "Succeeded"]
    assert by_name["cli-queued"][2] == "Queued"
    assert by_name["cli-queued"][header.index("QUEUE")] == "cli-queue"


def test_get_all_namespaces_includes_other_namespaces(cluster: Cluster, cli_team: str) -> None:
    other = cluster.namespace()
    cluster.apply(finetunejob("elsewhere", other, scheduling={"queueName": "other-queue"}))

    result = ftjob("--kubeconfig", str(cluster.kubeconfig), "get", "-A")

    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)[1:]
    assert [cli_team, "cli-sentiment", "Succeeded"] in [row[:3] for row in rows]
    assert [other, "elsewhere"] in [row[:2] for row in rows]
    namespaced = ftjob("--kubeconfig", str(cluster.kubeconfig), "get", "-n", other)
    assert [row[1] for row in table_rows(namespaced.stdout)[1:]] == ["elsewhere"]


def test_get_in_an_empty_namespace_says_none_found(cluster: Cluster) -> None:
    empty = cluster.namespace()

    result = ftjob("--kubeconfig", str(cluster.kubeconfig), "get", "-n", empty)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"No FineTuneJobs found in {empty}."


# Runs a command with SIGINT ignored, as a background job of a non-interactive shell (`make test &`) inherits it.
SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.mark.parametrize("sigint", ["default", "inherited-ignored"])
def test_watch_refreshes_the_table_until_interrupted(cluster: Cluster, cli_team: str, sigint: str) -> None:
    command = [ftjob_binary(), "--kubeconfig", str(cluster.kubeconfig), "watch", "-n", cli_team, "--interval", "0.2"]
    if sigint == "inherited-ignored":
        command = [sys.executable, "-c", SIGINT_IGNORED, *command]
    watch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        screens: list[str] = []
        # Each refresh clears the screen first; read until the third refresh has started.
        buffer = ""
        while len(screens) < 2:
            chunk = watch.stdout.readline()
            assert chunk, f"watch stopped early: {watch.stderr.read()}"
            buffer += chunk
            *screens, _ = buffer.split("\x1b[2J\x1b[H")[1:] or [""]
        watch.send_signal(signal.SIGINT)
        try:
            code = watch.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watch.kill()
            _, stderr = watch.communicate()
            pytest.fail(f"`ftjob watch` still ran 10 s after SIGINT; its stderr:\n{stderr[-3000:]}")
        assert code == 130, watch.stderr.read()
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    for screen in screens:
        names = {row[1]: row[2] for row in table_rows(screen)[1:]}
        assert names == {"cli-sentiment": "Succeeded", "cli-queued": "Queued"}, screen


def test_describe_shows_phase_reason_conditions_and_events(cluster: Cluster, cli_team: str) -> None:
    status = cluster.status(cli_team, "cli-sentiment")

    result = ftjob("--kubeconfig", str(cluster.kubeconfig), "describe", "cli-sentiment", "-n", cli_team)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"Namespace:   {cli_team}" in lines
    assert "Phase:       Succeeded" in lines
    assert f"Reason:      {status['reason']}" in lines
    conditions = lines[lines.index("Conditions:") + 1 : lines.index("Events:")]
    condition_rows = {row[0]: row[1:3] for row in table_rows("\n".join(conditions))[1:]}
    for condition in status["conditions"]:
        assert condition_rows[condition["type"]][0] == condition["status"]
    assert condition_rows["Succeeded"][0] == "True"
    events = table_rows("\n".join(lines[lines.index("Events:") + 1 :]))
    assert events[0][:2] == ["TYPE", "REASON"]
    assert "Completed" in [row[1] for row in events[1:]]


def test_describe_of_a_queued_job_names_its_queue(cluster: Cluster, cli_team: str) -> None:
    result = ftjob("--kubeconfig", str(cluster.kubeconfig), "describe", "cli-queued", "-n", cli_team)

    assert result.returncode == 0, result.stderr
    assert "Phase:       Queued" in result.stdout
    message = next(line for line in result.stdout.splitlines() if line.startswith("Message:"))
    assert "cli-queue" in message


def test_logs_print_what_the_trainer_wrote(cluster: Cluster, cli_team: str) -> None:
    result = ftjob("--kubeconfig", str(cluster.kubeconfig), "logs", "cli-sentiment", "-n", cli_team)

    assert result.returncode == 0, result.stderr
    # The trainer's closing line carries its final evaluation; the same numbers are in metrics.json.
    done = next((line for line in result.stdout.splitlines() if "finetune_trainer: done: " in line), None)
    assert done is not None, result.stdout[-2000:]
    metrics = json.loads((cluster.pvc_dir(cli_team, "models") / "out-cli-sentiment" / "metrics.json").read_text())
    assert json.loads(done.split("done: ", 1)[1])["eval_accuracy"] == metrics["eval_accuracy"]

    tail = ftjob("--kubeconfig", str(cluster.kubeconfig), "logs", "cli-sentiment", "-n", cli_team, "--tail", "1")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.strip() == result.stdout.strip().splitlines()[-1]


def test_logs_of_a_job_without_pods_exit_2_and_point_to_describe(cluster: Cluster, cli_team: str) -> None:
    result = ftjob("--kubeconfig", str(cluster.kubeconfig), "logs", "cli-queued", "-n", cli_team)

    assert result.returncode == 2
    assert "cli-queued has no trainer pod for rank 0 yet" in result.stderr
    assert "ftjob describe cli-queued" in result.stderr


@pytest.mark.parametrize("command", ["describe", "logs"])
def test_a_missing_job_exits_2_with_not_found(cluster: Cluster, cli_team: str, command: str) -> None:
    result = ftjob("--kubeconfig", str(cluster.kubeconfig), command, "missing", "-n", cli_team)

    assert result.returncode == 2
    assert f"FineTuneJob {cli_team}/missing not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("kubeconfig_text", "expected"),
    [
        ("garbage: [", "no usable kubeconfig in"),
        ("just a string", "no usable kubeconfig in"),
        ("apiVersion: v1\nkind: Config\nclusters: []\n", "no usable kubeconfig in"),
        # A well-formed kubeconfig whose server does not answer (port 1 is never listening).
        (
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:1'}\n"
            "contexts:\n- name: c\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {}\n",
            "cannot reach the Kubernetes API server at http://127.0.0.1:1",
        ),
    ],
    ids=["not-yaml", "not-a-mapping", "no-context", "server-down"],
)
def test_get_with_a_bad_kubeconfig_exits_2_with_a_message(tmp_path: Path, kubeconfig_text: str, expected: str) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)

    result = ftjob("--kubeconfig", str(kubeconfig), "get")

    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_get_with_a_missing_kubeconfig_names_the_file(tmp_path: Path) -> None:
    result = ftjob("--kubeconfig", str(tmp_path / "nowhere"), "get")

    assert result.returncode == 2
    assert f"no usable kubeconfig in {tmp_path / 'nowhere'}" in result.stderr
    assert "ftjob sandbox up" in result.stderr


# -- ftjob train: the trainer on this machine, no cluster ------------------------------------------------------


@pytest.fixture()
def pvc_root(tmp_path: Path, tiny_model_source: Path) -> Path:
    root = tmp_path / "pvcs"
    shutil.copytree(tiny_model_source, root / "models" / "tiny-bert")
    write_sentiment_csv(root / "datasets" / "sentiment" / "train.csv")
    return root


def write_job(path: Path, manifest: dict) -> Path:
    path.write_text(yaml.safe_dump(manifest))
    return path


def test_train_runs_the_trainer_locally_and_writes_metrics(tmp_path: Path, pvc_root: Path) -> None:
    job = write_job(tmp_path / "job.yaml", finetunejob("local-run", "default"))

    result = ftjob("train", str(job), "--pvc-root", str(pvc_root), "--max-steps", "4", timeout=300)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = pvc_root / "models" / "out-local-run"
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["global_step"] == 4  # --max-steps overrode the spec's 6
    assert metrics["task"] == "text-classification"
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert (output / "README.md").exists()
    assert "finetune_trainer: done: " in result.stderr


def test_train_with_an_invalid_spec_exits_2_naming_the_field(tmp_path: Path, pvc_root: Path) -> None:
    manifest = finetunejob("bad-rate", "default", hyperparameters={"learningRate": -1})
    job = write_job(tmp_path / "job.yaml", manifest)

    result = ftjob("train", str(job), "--pvc-root", str(pvc_root))

    assert result.returncode == 2
    assert f"ftjob: {job}: spec.hyperparameters.learningRate" in result.stderr
    assert "got -1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (pvc_root / "models" / "out-bad-rate").exists()


def test_train_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = ftjob("train", str(tmp_path / "nope.yaml"))

    assert result.returncode == 2
    assert f"cannot read {tmp_path / 'nope.yaml'}" in result.stderr


def test_train_on_data_missing_its_label_column_exits_3_with_invalid_data(tmp_path: Path, pvc_root: Path) -> None:
    write_sentiment_csv(pvc_root / "datasets" / "stars" / "train.csv", label_column="stars")
    manifest = finetunejob("no-label", "default", dataset={"train": "pvc://datasets/stars/train.csv"})
    job = write_job(tmp_path / "job.yaml", manifest)

    result = ftjob("train", str(job), "--pvc-root", str(pvc_root), timeout=300)

    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    stopped = next(line for line in result.stdout.splitlines() if line.startswith("ftjob train: the trainer stopped"))
    message = json.loads(stopped.split("exit code 3: ", 1)[1])
    assert message["reason"] == "InvalidData"
    assert "label" in message["message"]
    assert not (pvc_root / "models" / "out-no-label" / "metrics.json").exists()
