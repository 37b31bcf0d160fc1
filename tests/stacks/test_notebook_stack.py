"""The notebook stack: private and encrypted, a lifecycle script within limits, a role that does little."""

from __future__ import annotations

import ast
import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.stub import Stubber
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER
from jupyter_client import BlockingKernelClient

from dogbreeds_stacks.notebook import (
    AUTOSTOP_PATH,
    AUTOSTOP_SCRIPT,
    LIFECYCLE_SCRIPT_LIMIT,
    NOTEBOOK_PLATFORM,
    encode_lifecycle_script,
    lifecycle_on_start,
)
from dogbreeds_stacks.scripts import notebook_autostop
from tests.helpers import arn_text, as_list, one, policy_statements, resources


@pytest.fixture(scope="module")
def notebook(assembly) -> dict:
    return assembly.template("notebook")


def test_notebook_is_private_rootless_encrypted_and_on_imdsv2(notebook, settings):
    _, instance = one(notebook, "AWS::SageMaker::NotebookInstance")
    props = instance["Properties"]
    assert props["InstanceType"] == settings.notebook_instance_type == "ml.t3.medium"
    assert props["DirectInternetAccess"] == "Disabled"
    assert props["RootAccess"] == "Disabled"
    assert "KmsKeyId" in props and "SubnetId" in props
    assert "Private" in json.dumps(props["SubnetId"]) or "private" in json.dumps(props["SubnetId"])
    assert props["InstanceMetadataServiceConfiguration"] == {"MinimumInstanceMetadataServiceVersion": "2"}
    assert props["VolumeSizeInGB"] == settings.notebook_volume_size_gb


def test_notebook_runs_on_amazon_linux_2023(notebook):
    # Amazon Linux 2 notebook instances reach end of support on 2026-06-30.
    _, instance = one(notebook, "AWS::SageMaker::NotebookInstance")
    assert instance["Properties"]["PlatformIdentifier"] == NOTEBOOK_PLATFORM == "notebook-al2023-v1"
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", "AWS::SageMaker::NotebookInstance").schema
    assert "notebook-al2023-v1" in schema["properties"]["PlatformIdentifier"]["pattern"]


def test_lifecycle_script_is_small_unix_and_stops_after_the_idle_minutes(notebook, settings):
    _, config = one(notebook, "AWS::SageMaker::NotebookInstanceLifecycleConfig")
    (hook,) = config["Properties"]["OnStart"]
    assert len(hook["Content"]) <= LIFECYCLE_SCRIPT_LIMIT
    script = base64.b64decode(hook["Content"]).decode()
    assert "\r" not in script
    assert script.startswith("#!/bin/bash\n")
    assert f"/usr/bin/python3 {AUTOSTOP_PATH} --idle-minutes {settings.notebook_idle_minutes}\n" in script
    # Amazon Linux 2023 installs no cron: a systemd timer runs the check.
    assert "/etc/cron.d" not in script and "crontab" not in script
    assert "systemctl enable --now dogbreeds-autostop.timer\n" in script


def test_lifecycle_script_follows_the_setting():
    assert "--idle-minutes 15" in lifecycle_on_start(15)


def test_lifecycle_script_over_the_limit_is_refused():
    with pytest.raises(ValueError, match="base64 characters; the limit is 16384"):
        encode_lifecycle_script("x" * 13000)
    assert "\r" not in base64.b64decode(encode_lifecycle_script("a\r\nb\r\n")).decode()


def test_notebook_role_can_do_only_its_work(notebook, settings):
    statements = policy_statements(notebook, "Policy")
    actions = {sid: sorted(as_list(s["Action"])) for sid, s in statements.items()}
    assert actions["StartTraining"] == ["states:ListExecutions", "states:StartExecution"]
    assert actions["InvokeEndpoint"] == ["sagemaker:InvokeEndpoint"]
    assert arn_text(statements["InvokeEndpoint"]["Resource"]).endswith(f":endpoint/{settings.endpoint_name}")
    assert arn_text(statements["StopWhenIdle"]["Resource"]).endswith(":notebook-instance/dogbreeds-notebook")
    assert arn_text(statements["FollowTraining"]["Resource"]).endswith(":execution:dogbreeds-training:*")
    # What `dogbreeds train` reads while it follows a run from the notebook: the jobs, the trials, the logs.
    assert actions["WatchJobs"] == [
        "sagemaker:DescribeHyperParameterTuningJob",
        "sagemaker:DescribeTrainingJob",
        "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
    ]
    assert actions["ReadJobLogs"] == ["logs:DescribeLogStreams", "logs:FilterLogEvents", "logs:GetLogEvents"]
    writes = sorted(arn_text(r).rsplit(">/", 1)[1] for r in statements["ArtifactsWrite"]["Resource"])
    assert writes == ["datasets/dogImages/*", "pretrained/*"]
    every_action = {a for s in statements.values() for a in as_list(s["Action"])}
    assert not any(a.endswith(":*") or a == "*" for a in every_action)
    (role,) = resources(notebook, "AWS::IAM::Role").values()
    assert "ManagedPolicyArns" not in role["Properties"]


# --- the OnStart script, run outside / -------------------------------------------------------


def test_autostop_script_stays_python_3_7():
    # It runs under the instance's system Python, not the project's; ast knows the grammar of older versions.
    ast.parse(AUTOSTOP_SCRIPT.read_text(), feature_version=(3, 7))


def test_on_start_installs_the_check_and_a_systemd_timer(tmp_path):
    calls = tmp_path / "systemctl.calls"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "systemctl").write_text(f'#!/bin/bash\necho "$*" >> {calls}\n')
    (fake_bin / "systemctl").chmod(0o755)
    root = tmp_path / "root"
    on_start = tmp_path / "on-start.sh"
    on_start.write_text(lifecycle_on_start(45, root=str(root)))
    # SageMaker runs lifecycle scripts as root with PATH=/sbin:bin:/usr/sbin:/usr/bin.
    env = {"PATH": f"{fake_bin}:/sbin:/bin:/usr/sbin:/usr/bin"}
    result = subprocess.run(["bash", str(on_start)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (root / AUTOSTOP_PATH.lstrip("/")).read_text() == AUTOSTOP_SCRIPT.read_text()
    assert calls.read_text().splitlines() == ["daemon-reload", "enable --now dogbreeds-autostop.timer"]
    # The start log says how the check would stop the instance, or warns that it cannot: never silent.
    assert "autostop stopper=" in result.stdout or "WARNING: the idle auto-stop cannot stop" in result.stderr
    units = root / "etc/systemd/system"
    service = (units / "dogbreeds-autostop.service").read_text()
    assert f"ExecStart=/usr/bin/python3 {root}{AUTOSTOP_PATH} --idle-minutes 45\n" in service
    if shutil.which("systemd-analyze"):  # systemd's own parser: unknown keys and bad values are reported
        verify = subprocess.run(
            ["systemd-analyze", "verify", *(str(p) for p in sorted(units.iterdir()))],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (verify.returncode, verify.stderr) == (0, "")


# --- the auto-stop script, against a real Jupyter server on loopback ---------------------------


@dataclass
class Jupyter:
    url: str
    token: str
    runtime: Path

    def api(self, method: str, path: str, body: dict | None = None, track: bool = False) -> object:
        """Call the REST API without counting as activity; ``track`` makes it count, as a user's request does."""
        url = f"{self.url}{path}" + ("" if track else "?no_track_activity=1")
        request = urllib.request.Request(  # noqa: S310 - the test's own loopback server
            url,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the same
            data = response.read()
        return json.loads(data) if data else None

    def last_activity(self) -> datetime:
        return notebook_autostop.parse_time(self.api("GET", "/api/status")["last_activity"])

    def kernel(self, kernel_id: str) -> dict:
        return self.api("GET", f"/api/kernels/{kernel_id}")


def _wait_for(condition: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory) -> Iterator[Jupyter]:
    """jupyter_server on loopback, token auth, its own root, runtime, config and data folders."""
    home = tmp_path_factory.mktemp("jupyter")
    (home / "root").mkdir()
    token = secrets.token_hex(16)
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={home / 'root'}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",  # CI runs as root
    ]
    with (home / "server.log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = Jupyter(f"http://127.0.0.1:{port}", token, home / "runtime")

        def ready() -> bool:
            assert process.poll() is None, (home / "server.log").read_text()
            try:
                server.api("GET", "/api/status")
            except (urllib.error.URLError, ConnectionError):
                return False
            return True

        try:
            _wait_for(ready, "jupyter_server to answer")
            yield server
        finally:
            process.terminate()  # jupyter_server shuts its kernels down on SIGTERM
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Kernel:
    id: str
    client: BlockingKernelClient


@pytest.fixture
def kernel(jupyter) -> Iterator[Kernel]:
    """A python3 kernel (ipykernel) started through the REST API, with a client on its own ZMQ channels.

    The server reports a new kernel as 'starting' until some client asks it for its info (a browser does when it
    opens the notebook); the client here does the same, and runs code the way a notebook would, while the server
    only watches the kernel's messages.
    """
    kernel_id = jupyter.api("POST", "/api/kernels", {"name": "python3"}, track=True)["id"]
    client = BlockingKernelClient(connection_file=str(jupyter.runtime / f"kernel-{kernel_id}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)

        def idle() -> bool:
            if jupyter.kernel(kernel_id)["execution_state"] == "idle":
                return True
            # The server may have subscribed to the kernel's messages after its first answer: ask again.
            client.kernel_info()
            time.sleep(0.2)
            return False

        _wait_for(idle, "the kernel to be idle")
        yield Kernel(kernel_id, client)
    finally:
        client.stop_channels()
        jupyter.api("POST", f"/api/kernels/{kernel_id}/interrupt", track=True)
        jupyter.api("DELETE", f"/api/kernels/{kernel_id}", track=True)


class Stops:
    """A stand-in for StopNotebookInstance that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def _check(jupyter: Jupyter, limit: float, now: datetime, stop: Stops) -> str:
    return notebook_autostop.check(jupyter.url, limit, now, stop, token=jupyter.token)


def test_checking_does_not_reset_the_idle_clock(jupyter):
    # The regression: the check polled /api/kernels, and jupyter_server counts API requests as activity, so
    # the server never looked idle. Real time passes between the checks here; nothing is simulated.
    assert jupyter.api("GET", "/api/kernels") == []
    before = jupyter.last_activity()
    stop = Stops()
    for _ in range(3):
        time.sleep(0.4)
        assert _check(jupyter, 60, datetime.now(UTC), stop) == "active"
    assert jupyter.last_activity() == before
    waited = (datetime.now(UTC) - before).total_seconds()
    idle = notebook_autostop.idle_minutes(jupyter.url, datetime.now(UTC), jupyter.token)
    assert idle * 60 >= waited >= 1.2
    # The control: the same request without no_track_activity is activity, so this test can see the bug.
    jupyter.api("GET", "/api/kernels", track=True)
    assert jupyter.last_activity() > before
    assert stop.calls == 0


def test_without_kernels_the_server_stops_after_the_limit_and_not_before(jupyter):
    assert jupyter.api("GET", "/api/kernels") == []
    limit = 0.02  # minutes: 1.2 seconds
    last = jupyter.last_activity()
    stop = Stops()
    assert _check(jupyter, limit, last + timedelta(seconds=1.1), stop) == "active"
    assert stop.calls == 0
    time.sleep(max(0.0, (last + timedelta(seconds=1.3) - datetime.now(UTC)).total_seconds()))
    assert _check(jupyter, limit, datetime.now(UTC), stop) == "stopped"
    assert stop.calls == 1


def test_an_idle_kernel_stops_after_the_limit_and_its_activity_resets_the_clock(jupyter, kernel):
    model = jupyter.kernel(kernel.id)
    assert model["execution_state"] == "idle"
    newest = max(jupyter.last_activity(), notebook_autostop.parse_time(model["last_activity"]))
    stop = Stops()
    assert _check(jupyter, 10, newest + timedelta(minutes=9.9), stop) == "active"
    just_past_the_limit = newest + timedelta(minutes=10, milliseconds=1)
    assert _check(jupyter, 10, just_past_the_limit, stop) == "stopped"
    # Code run in the kernel is activity even though no API request carried it: the clock starts again.
    kernel.client.execute("1 + 1", reply=True, timeout=30)
    _wait_for(lambda: notebook_autostop.parse_time(jupyter.kernel(kernel.id)["last_activity"]) > newest, "activity")
    assert _check(jupyter, 10, just_past_the_limit, stop) == "active"
    assert stop.calls == 1


def test_a_busy_kernel_is_never_idle(jupyter, kernel):
    kernel.client.execute("import time; time.sleep(120)")
    _wait_for(lambda: jupyter.kernel(kernel.id)["execution_state"] == "busy", "the kernel to be busy")
    stop = Stops()
    assert _check(jupyter, 1, datetime.now(UTC) + timedelta(days=1), stop) == "busy"
    assert stop.calls == 0


def test_main_reads_the_instance_and_stops_it_when_idle(jupyter, tmp_path, capsys):
    metadata = tmp_path / "resource-metadata.json"
    metadata.write_text(
        json.dumps(
            {
                "ResourceArn": "arn:aws:sagemaker:eu-west-1:111122223333:notebook-instance/dogbreeds-notebook",
                "ResourceName": "dogbreeds-notebook",
            }
        )
    )
    stopped = []
    args = ["--server", jupyter.url, "--token", jupyter.token, "--metadata", str(metadata)]
    time.sleep(0.1)  # longer than 0.001 minutes (60 ms) since the last activity
    assert notebook_autostop.main([*args, "--idle-minutes", "0.001", "--dry-run"], stopper=stopped.append) == 0
    assert "dry_run=1" in capsys.readouterr().out and stopped == []

    def stopper(name: str, region: str) -> None:
        stopped.append((name, region))

    assert notebook_autostop.main([*args, "--idle-minutes", "0.001"], stopper=stopper) == 0
    assert stopped == [("dogbreeds-notebook", "eu-west-1")]
    out = capsys.readouterr().out
    assert "action=stop" in out and "stopped=dogbreeds-notebook region=eu-west-1" in out
    assert notebook_autostop.main([*args, "--idle-minutes", "600"], stopper=stopper) == 0
    assert "limit_minutes=600 action=none" in capsys.readouterr().out
    assert len(stopped) == 1


def test_main_fails_loudly(jupyter, tmp_path, capsys):
    def broken(name: str, region: str) -> None:
        raise RuntimeError("AccessDenied")

    metadata = tmp_path / "missing.json"
    args = ["--server", jupyter.url, "--token", jupyter.token, "--idle-minutes", "0"]
    assert notebook_autostop.main([*args, "--metadata", str(metadata)], stopper=broken) == 1
    assert "autostop ERROR FileNotFoundError" in capsys.readouterr().err
    metadata.write_text('{"ResourceArn": "arn:aws:sagemaker:us-east-1:1:notebook-instance/n", "ResourceName": "n"}')
    assert notebook_autostop.main([*args, "--metadata", str(metadata)], stopper=broken) == 1
    assert "autostop ERROR RuntimeError: AccessDenied" in capsys.readouterr().err
    assert notebook_autostop.main([*args[:2], "--idle-minutes", "0", "--token", "wrong"], stopper=broken) == 1
    assert "autostop ERROR HTTPError: HTTP Error 403" in capsys.readouterr().err
    closed = f"http://127.0.0.1:{_free_port()}"
    assert notebook_autostop.main(["--server", closed, "--idle-minutes", "0"], stopper=broken) == 1
    assert "autostop ERROR URLError" in capsys.readouterr().err


# --- how the script stops the instance ----------------------------------------------------------


def test_boto3_stopper_sends_stop_notebook_instance():
    client = boto3.client("sagemaker", region_name="eu-west-1", config=Config(signature_version=UNSIGNED))
    with Stubber(client) as stubber:
        stubber.add_response("stop_notebook_instance", {}, {"NotebookInstanceName": "dogbreeds-notebook"})
        regions = []

        def make_client(region: str):
            regions.append(region)
            return client

        stop = notebook_autostop.boto3_stopper(make_client)
        stop("dogbreeds-notebook", "eu-west-1")
        stubber.assert_no_pending_responses()
    assert regions == ["eu-west-1"]
    assert notebook_autostop.find_stopper(paths=[]).how == "boto3"


def _fake_aws(folder: Path, status: int = 0) -> Path:
    aws = folder / "aws"
    aws.write_text(f'#!/bin/bash\necho "$@" > {folder / "aws.args"}\nexit {status}\n')
    aws.chmod(0o755)
    return aws


def test_without_boto3_the_cli_is_found_at_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 raises ImportError, as on a bare system Python
    assert notebook_autostop.boto3_stopper() is None
    aws = _fake_aws(tmp_path)
    stop = notebook_autostop.find_stopper(paths=[str(tmp_path / "absent" / "aws"), str(aws)])
    assert stop.how == f"aws-cli:{aws}"
    stop("dogbreeds-notebook", "eu-west-1")
    expected = "sagemaker stop-notebook-instance --region eu-west-1 --notebook-instance-name dogbreeds-notebook"
    assert (tmp_path / "aws.args").read_text().strip() == expected
    (tmp_path / "failing").mkdir()
    failing = notebook_autostop.cli_stopper([str(_fake_aws(tmp_path / "failing", status=255))])
    with pytest.raises(subprocess.CalledProcessError):
        failing("dogbreeds-notebook", "eu-west-1")


def test_without_boto3_or_the_cli_the_error_names_both(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(RuntimeError, match=r"has no boto3 and no AWS CLI at \['/nowhere/aws'\]"):
        notebook_autostop.find_stopper(paths=["/nowhere/aws"])
