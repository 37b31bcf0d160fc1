"""The CLI's light copy of the app's names stays equal to the app's own (stacks/, training/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dogbreeds.ops import config, dataset, training, weights
from dogbreeds.ops.config import AppConfig
from dogbreeds.ops.errors import UsageError
from stacks import training_pipeline
from stacks.contract import PREFIXES
from stacks.settings import Settings, defaults

REVIEWED = Path(__file__).resolve().parents[2] / "reviewed-templates"

# Every stack output a command reads.
OUTPUTS_READ = {
    "foundation": {"ArtifactBucketName"},
    "training": {"StateMachineArn", "ModelParameterName"},
    "notebook": {"NotebookName"},
    "endpoint": {"EndpointName"},
    "invoker": {"FunctionName", "AliasArn"},
}


@pytest.mark.parametrize("overrides", [{}, {"project_name": "demo-2"}])
def test_stack_names_are_the_settings_stack_names(overrides):
    mine = AppConfig.load([f"{k}={v}" for k, v in overrides.items()])
    theirs = Settings.from_mapping({**defaults(), **overrides})
    for part in config.STACK_PARTS:
        assert mine.stack_name(part) == theirs.stack_name(part)


def test_the_stack_parts_are_the_apps_stacks():
    reviewed = {p.name.removeprefix("dogbreeds-").removesuffix(".template.json") for p in REVIEWED.glob("*.json")}
    assert set(config.STACK_PARTS) == reviewed


@pytest.mark.parametrize("part", sorted(OUTPUTS_READ))
def test_every_output_read_is_in_the_reviewed_template(part):
    template = json.loads((REVIEWED / f"dogbreeds-{part}.template.json").read_text())
    assert OUTPUTS_READ[part] <= set(template["Outputs"])


def test_the_cli_reads_the_stacks_names_without_importing_the_cdk():
    """Prefixes and hyperparameters come from stacks.contract, which the stacks use too; neither it nor the
    CLI may import the CDK (its Node.js runtime would start for every command)."""
    assert training.HYPERPARAMETERS is training_pipeline.HYPERPARAMETERS
    assert dataset.PREFIXES is PREFIXES
    script = "import sys, dogbreeds.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {0!r}))"
    result = subprocess.run(
        [sys.executable, "-c", script.format({"aws_cdk", "constructs", "jsii", "cdk_nag", "torch"})],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_weights_table_matches_torchvision_enums():
    pytest.importorskip("torchvision")
    import model  # training/model.py (training/ is on pytest's pythonpath)

    assert {name: weights_enum.url for name, (_, weights_enum) in model.BACKBONES.items()} == (
        weights.TORCHVISION_WEIGHTS
    )


def test_metric_patterns_are_training_metrics():
    from metrics import METRIC_REGEXES, metric_line

    patterns = training.metric_regexes()
    assert [p.pattern for p in patterns] == list(METRIC_REGEXES.values())
    assert any(p.search(metric_line(epoch=1, valid_loss=0.5)) for p in patterns)
    assert not any(p.search("Downloading input data") for p in patterns)


def test_context_overrides_are_checked_like_cdk_synth():
    assert AppConfig.load(["project_name=demo"]).cdk_command("deploy", "training") == (
        "npx cdk deploy demo-training -c project_name=demo"
    )
    with pytest.raises(UsageError, match=r"endpoint_max_capcity is not a setting\. Did you mean endpoint_max_capacity"):
        AppConfig.load(["endpoint_max_capcity=3"])
    with pytest.raises(UsageError, match="takes KEY=VALUE"):
        AppConfig.load(["project_name"])
    with pytest.raises(UsageError, match="project_name='Bad_Name'"):
        AppConfig.load(["project_name=Bad_Name"])


def test_typed_values_parse_cdk_json_and_context_strings():
    cfg = AppConfig.load(["lambda_max_image_mb=3", "tuning_enabled=false"])
    assert cfg.integer("lambda_max_image_mb") == 3 and cfg.boolean("tuning_enabled") is False
    assert AppConfig.load().integer("lambda_max_image_mb") == defaults()["lambda_max_image_mb"]
    with pytest.raises(UsageError, match="lambda_max_image_mb=three: accepted is a whole number"):
        AppConfig.load(["lambda_max_image_mb=three"]).integer("lambda_max_image_mb")
