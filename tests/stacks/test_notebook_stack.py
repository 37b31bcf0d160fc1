"""The notebook stack: private and encrypted, a lifecycle script within limits, a role that does little."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from stacks.notebook import LIFECYCLE_SCRIPT_LIMIT, encode_lifecycle_script, lifecycle_on_start
from stacks.scripts import notebook_autostop
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


def test_lifecycle_script_is_small_unix_and_stops_after_the_idle_minutes(notebook, settings):
    _, config = one(notebook, "AWS::SageMaker::NotebookInstanceLifecycleConfig")
    (hook,) = config["Properties"]["OnStart"]
    assert len(hook["Content"]) <= LIFECYCLE_SCRIPT_LIMIT
    script = base64.b64decode(hook["Content"]).decode()
    assert "\r" not in script
    assert script.startswith("#!/bin/bash\n")
    assert f"--idle-minutes {settings.notebook_idle_minutes}" in script
    assert "/etc/cron.d/dogbreeds-autostop" in script


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
    writes = sorted(arn_text(r).rsplit(">/", 1)[1] for r in statements["ArtifactsWrite"]["Resource"])
    assert writes == ["datasets/dogImages/*", "pretrained/*"]
    every_action = {a for s in statements.values() for a in as_list(s["Action"])}
    assert not any(a.endswith(":*") or a == "*" for a in every_action)
    (role,) = resources(notebook, "AWS::IAM::Role").values()
    assert "ManagedPolicyArns" not in role["Properties"]


# --- the auto-stop script itself, against a stand-in Jupyter server ---------------------------


class FakeJupyter(BaseHTTPRequestHandler):
    kernels: ClassVar[list] = []
    status: ClassVar[dict] = {}

    def do_GET(self):
        body = {"/api/kernels": self.kernels, "/api/status": self.status}[self.path]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def jupyter():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJupyter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def test_autostop_counts_idle_minutes_from_the_newest_kernel_activity(jupyter):
    FakeJupyter.kernels = [
        {"execution_state": "idle", "last_activity": _ago(90)},
        {"execution_state": "idle", "last_activity": _ago(30)},
    ]
    idle = notebook_autostop.idle_minutes(jupyter, datetime.now(UTC))
    assert 29 < idle < 31


def test_autostop_never_stops_while_a_kernel_is_busy(jupyter):
    FakeJupyter.kernels = [{"execution_state": "busy", "last_activity": _ago(600)}]
    assert notebook_autostop.idle_minutes(jupyter, datetime.now(UTC)) is None


def test_autostop_uses_the_server_activity_without_kernels(jupyter, capsys):
    FakeJupyter.kernels = []
    FakeJupyter.status = {"last_activity": _ago(75)}
    assert notebook_autostop.main(["--idle-minutes", "60", "--server", jupyter, "--dry-run"]) == 0
    assert "stopping this notebook instance" in capsys.readouterr().out
    assert notebook_autostop.main(["--idle-minutes", "120", "--server", jupyter, "--dry-run"]) == 0
    assert "idle for 75 of 120 minutes" in capsys.readouterr().out
