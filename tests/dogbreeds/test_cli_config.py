"""The CLI reads the settings with the app's one reader (dogbreeds_stacks.settings): cdk.json, then -c, all validated
before any AWS call; names come from dogbreeds_stacks.names; and the CLI starts without the CDK, torch or sagemaker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dogbreeds.ops import config as config_module
from dogbreeds.ops import dataset, training, weights
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import EXIT_USAGE
from dogbreeds_stacks import settings as settings_module
from dogbreeds_stacks.contract import PREFIXES, training_hyperparameters
from dogbreeds_stacks.names import STACK_PARTS
from dogbreeds_stacks.settings import Settings, SettingsError
from tests.dogbreeds.fakes import NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]
REVIEWED = REPO_ROOT / "reviewed-templates"

# Every stack output a command reads.
OUTPUTS_READ = {
    "foundation": {"ArtifactBucketName"},
    "training": {"StateMachineArn", "ModelPackageGroupName", "ApprovedPackageParameterName"},
    "notebook": {"NotebookName"},
    "endpoint": {
        "EndpointName",
        "EndpointConfigName",
        "ModelPackageArn",
        "DashboardName",
        "ScalableTargetResourceId",
        "ScalingPolicyName",
    },
    "invoker": {"FunctionName", "AliasArn", "PredictUrl"},
}


# --- -c as the CLI reads it -------------------------------------------------------------------------


def test_the_settings_are_the_apps_with_the_overrides_typed():
    config = Config.load(["lambda_max_image_mb=3", "tuning_enabled=false", "tuning_batch_sizes=32,64"])
    assert config.settings == Settings.load(
        ["lambda_max_image_mb=3", "tuning_enabled=false", "tuning_batch_sizes=32,64"]
    )
    assert config.settings.lambda_max_image_mb == 3
    assert config.settings.tuning_enabled is False
    assert config.settings.tuning_batch_sizes == (32, 64)
    assert config.overrides == ("lambda_max_image_mb=3", "tuning_enabled=false", "tuning_batch_sizes=32,64")
    assert Config.load().settings == Settings.load()


def test_project_name_changes_every_stack_name_and_the_deploy_commands():
    config = Config.load(["project_name=demo-2", "top_k=3"])
    assert config.names.stacks == tuple(f"demo-2-{part}" for part in STACK_PARTS)
    assert config.names.lambda_function == "demo-2-predict"
    assert (
        config.cdk_command("deploy", "training") == "npx cdk deploy demo-2-training -c project_name=demo-2 -c top_k=3"
    )
    assert Config.load().cdk_command("deploy", "endpoint") == f"npx cdk deploy {NAMES.stack('endpoint')}"


def test_the_items_are_passed_on_as_typed_quoted_for_the_shell():
    config = Config.load(["tuning_batch_sizes=[32, 64]"])
    assert config.settings.tuning_batch_sizes == (32, 64)
    assert config.cdk_command("deploy", "training") == (
        f"npx cdk deploy {NAMES.stack('training')} -c 'tuning_batch_sizes=[32, 64]'"
    )


def test_every_command_asks_for_the_stacks_of_the_project_name(fake, run_cli):
    fake.stacks.stacks = {}
    result = run_cli("-c", "project_name=demo", "status")
    assert result.code == 0, result.err
    assert fake.stacks.asked == [f"demo-{part}" for part in STACK_PARTS]
    assert result.out.startswith(f"Stacks of demo in {fake.region_name}:\n")


@pytest.mark.parametrize(
    ("items", "errors"),
    [
        (["project_name"], ["-c project_name: takes KEY=VALUE, for example -c project_name=dogbreeds"]),
        (["=3"], ["-c =3: takes KEY=VALUE, for example -c project_name=dogbreeds"]),
        (
            ["endpoint_max_capcity=3"],
            [
                "endpoint_max_capcity is not a setting. Did you mean endpoint_max_capacity? The settings are listed "
                "in the README and in cdk.json."
            ],
        ),
        (["nope=1"], ["nope is not a setting. The settings are listed in the README and in cdk.json."]),
        (
            ["project_name=Bad_Name"],
            ['project_name="Bad_Name": accepted is 2-20 lowercase letters, digits or hyphens, starting with a letter.'],
        ),
        (["lambda_max_image_mb=three"], ['lambda_max_image_mb="three": accepted is a whole number.']),
        (["tuning_enabled=maybe"], ['tuning_enabled="maybe": accepted is true or false.']),
        (["endpoint_min_capacity=4"], ["endpoint_min_capacity=4 must not exceed endpoint_max_capacity=3."]),
        (
            ["top_k=0", "lambda_memory_mb=64"],
            [
                "lambda_memory_mb=64: accepted is a whole number from 128 to 10240.",
                "top_k=0: accepted is a whole number from 1 to 133.",
            ],
        ),
    ],
)
def test_a_wrong_setting_is_a_usage_error_before_any_aws_call(fake, run_cli, items, errors):
    result = run_cli(*(word for item in items for word in ("-c", item)), "status")
    assert result.code == EXIT_USAGE
    assert sorted(result.err.splitlines()) == sorted(f"error: {e}" for e in errors)  # one line per problem
    assert result.out == ""
    assert fake.opened == [] and fake.stacks.asked == []


def test_an_unknown_instance_type_is_refused_with_a_suggestion(fake, run_cli):
    result = run_cli("upload-weights", "-c", "endpoint_instance_type=ml.g4dn.xlarg")
    assert result.code == EXIT_USAGE
    (line,) = result.err.splitlines()
    assert line.startswith('error: endpoint_instance_type="ml.g4dn.xlarg": accepted is a SageMaker endpoint ')
    assert line.endswith("Did you mean ml.g4dn.xlarge?")
    assert fake.opened == []


def test_the_reader_is_the_apps_own(fake, run_cli):
    """Whatever dogbreeds_stacks.settings refuses, the CLI refuses with the same words."""
    with pytest.raises(SettingsError) as refused:
        Settings.load(["training_instance_count=0"])
    result = run_cli("-c", "training_instance_count=0", "preflight")
    assert result.code == EXIT_USAGE
    assert result.err == "".join(f"error: {problem}\n" for problem in refused.value.problems)


def test_no_cdk_json_says_where_the_cli_reads_its_settings(fake, monkeypatch, tmp_path, run_cli):
    missing = tmp_path / "cdk.json"
    monkeypatch.setattr(settings_module, "CDK_JSON", missing)
    result = run_cli("status")
    assert result.code == EXIT_USAGE
    assert result.err == (
        f"error: {missing} not found: the CLI reads the app's settings from the checkout it is installed from "
        "(pip install -e .).\n"
    )
    assert config_module.REPO_ROOT == REPO_ROOT


# --- names and what the CLI shares with the app ----------------------------------------------------


def test_the_stack_parts_are_the_apps_stacks():
    reviewed = {p.name.removesuffix(".template.json") for p in REVIEWED.glob("*.json")}
    assert set(Config.load().names.stacks) == reviewed


@pytest.mark.parametrize("part", sorted(OUTPUTS_READ))
def test_every_output_read_is_in_the_reviewed_template(part):
    template = json.loads((REVIEWED / f"{NAMES.stack(part)}.template.json").read_text())
    assert OUTPUTS_READ[part] <= set(template["Outputs"])


def test_the_cli_imports_neither_the_cdk_nor_torch_nor_sagemaker_core():
    """Prefixes and hyperparameters come from dogbreeds_stacks.contract and training/, which the stacks use too; neither
    they nor the CLI may import the CDK (its Node.js runtime would start for every command), torch or
    sagemaker-core (each takes seconds to import)."""
    assert training.HYPERPARAMETERS is training_hyperparameters().PIPELINE_HYPERPARAMETERS
    assert dataset.PREFIXES is PREFIXES
    heavy = ("aws_cdk", "constructs", "jsii", "cdk_nag", "torch", "torchvision", "sagemaker.core")
    script = (
        "import sys, dogbreeds.cli\n"
        f"heavy = {heavy!r}\n"
        "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
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
