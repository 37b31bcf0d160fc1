"""Settings: the defaults reproduce the design's seed values; each bad value gets its exact message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.settings import Settings, SettingsError, defaults

ROOT = Path(__file__).resolve().parents[2]


def _error(**overrides) -> list[str]:
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping({**defaults(), **overrides})
    return err.value.problems


def test_defaults_reproduce_the_design_seed_values(settings):
    assert settings.notebook_instance_type == "ml.t3.medium"
    assert settings.endpoint_instance_type == "ml.g4dn.xlarge"
    assert (settings.endpoint_min_capacity, settings.endpoint_max_capacity) == (1, 3)
    assert settings.endpoint_target_invocations_per_instance == 70
    assert settings.endpoint_scale_in_cooldown_seconds == 60
    assert settings.endpoint_scale_out_cooldown_seconds == 60
    assert settings.lambda_reserved_concurrency == 10
    assert settings.lambda_provisioned_concurrency == 1
    assert (settings.tuning_learning_rate_min, settings.tuning_learning_rate_max) == (0.001, 0.1)
    assert settings.tuning_batch_sizes == (32, 64, 128, 256, 512)
    assert settings.training_instance_count == 2
    assert settings.notebook_idle_minutes == 60


def test_settings_are_frozen(settings):
    with pytest.raises(AttributeError):
        settings.endpoint_max_capacity = 10  # type: ignore[misc]


def test_every_field_has_a_default_in_cdk_json_and_a_description():
    assert set(defaults()) == set(Settings.keys())
    assert all(len(doc) > 10 for doc in Settings.docs().values())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"endpoint_min_capacity": 4},
            "endpoint_min_capacity=4 must not exceed endpoint_max_capacity=3.",
        ),
        (
            {"notebook_instance_type": "t3.medium"},
            'notebook_instance_type="t3.medium": accepted is a SageMaker ML instance type such as ml.g4dn.xlarge.',
        ),
        (
            {"endpoint_instance_type": "ml.g4dn"},
            'endpoint_instance_type="ml.g4dn": accepted is a SageMaker ML instance type such as ml.g4dn.xlarge.',
        ),
        (
            {"lambda_provisioned_concurrency": 11},
            "lambda_provisioned_concurrency=11 must not exceed lambda_reserved_concurrency=10.",
        ),
        (
            {"ec2_training_instance_type": "ml.g4dn.xlarge"},
            'ec2_training_instance_type="ml.g4dn.xlarge": accepted is an EC2 instance type without the ml. '
            "prefix, such as g4dn.xlarge.",
        ),
        (
            {"endpoint_min_capacity": 0},
            "endpoint_min_capacity=0: accepted is a whole number of at least 1.",
        ),
        (
            {"tuning_learning_rate_min": 0.2},
            "tuning_learning_rate_min=0.2 must be below tuning_learning_rate_max=0.1.",
        ),
        (
            {"tuning_max_parallel_jobs": 7},
            "tuning_max_parallel_jobs=7 must not exceed tuning_max_jobs=6.",
        ),
        (
            {"tuning_batch_sizes": "32,32"},
            "tuning_batch_sizes=[32, 32]: each batch size may appear once.",
        ),
        (
            {"nat_gateways": 3},
            "nat_gateways=3: accepted is one of 0, 1, 2.",
        ),
        (
            {"log_retention_days": 10},
            "log_retention_days=10: accepted is one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, "
            "545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653.",
        ),
        (
            {"quality_gate_min_test_accuracy": 1.5},
            "quality_gate_min_test_accuracy=1.5: accepted is a number from 0.0 to 1.0.",
        ),
        (
            {"training_backbone": "vgg16"},
            'training_backbone="vgg16": accepted is one of resnet18, resnet34, resnet50, resnet101.',
        ),
        (
            {"vpc_cidr": "8.8.0.0/16"},
            'vpc_cidr="8.8.0.0/16": accepted is a private IPv4 network from /16 to /22, such as 10.42.0.0/16.',
        ),
        (
            {"training_use_spot": True, "training_max_wait_seconds": 3600},
            "training_max_wait_seconds=3600 must be at least training_max_runtime_seconds=14400 when "
            "training_use_spot=true (SageMaker counts the run time inside the wait).",
        ),
        (
            {"endpoint_model_data_url": "https://bucket/model.tar.gz"},
            'endpoint_model_data_url="https://bucket/model.tar.gz": accepted is empty (serve the last trained '
            "model) or an s3://bucket/key.tar.gz URI.",
        ),
        (
            {"lambda_fetch_timeout_seconds": 30},
            "lambda_fetch_timeout_seconds=30 must be below lambda_timeout_seconds=30, or the Lambda times out "
            "before the fetch.",
        ),
        (
            {"lambda_endpoint_max_attempts": 4},
            "lambda_fetch_timeout_seconds=5 plus lambda_endpoint_max_attempts=4 calls of "
            "lambda_endpoint_timeout_seconds=7 and their retry back-off take up to 40 s, more than "
            "lambda_timeout_seconds=30: lower one of them or raise lambda_timeout_seconds, so that the Lambda "
            "answers 504 itself instead of timing out.",
        ),
        (
            {"endpoint_max_capacity": "three"},
            'endpoint_max_capacity="three": accepted is a whole number.',
        ),
        (
            {"retain_data": "maybe"},
            'retain_data="maybe": accepted is true or false.',
        ),
        (
            {"endpoint_max_capcity": 3},
            "endpoint_max_capcity is not a setting. Did you mean endpoint_max_capacity? The settings are "
            "listed in the README and in cdk.json.",
        ),
    ],
)
def test_bad_value_gives_its_exact_message(overrides, message):
    assert _error(**overrides) == [message]


def test_framework_version_must_be_in_sagemaker_core_tables():
    (problem,) = _error(training_framework_version="9.9.9")
    assert problem.startswith('training_framework_version="9.9.9": accepted is a PyTorch training container')
    assert "2.10.0" in problem


def test_several_bad_values_are_reported_together():
    problems = _error(endpoint_min_capacity=4, notebook_instance_type="t3.medium", lambda_provisioned_concurrency=11)
    assert len(problems) == 3


def test_provisioned_autoscaling_needs_a_consistent_range():
    assert _error(lambda_provisioned_autoscaling=True, lambda_provisioned_max=20) == [
        "lambda_provisioned_max=20 must lie between lambda_provisioned_concurrency=1 and "
        "lambda_reserved_concurrency=10."
    ]


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("endpoint_max_capacity", "5", 5),
        ("retain_data", "false", False),
        ("training_use_spot", "TRUE", True),
        ("tuning_learning_rate_max", "0.05", 0.05),
        ("tuning_batch_sizes", "16,32", (16, 32)),
        ("tuning_batch_sizes", "[64, 128]", (64, 128)),
        ("endpoint_name", "breeds-prod", "breeds-prod"),
    ],
)
def test_cli_strings_are_parsed_by_type(key, text, expected):
    assert getattr(Settings.from_mapping({**defaults(), key: text}), key) == expected


def test_replace_validates(settings):
    assert settings.replace(endpoint_max_capacity=5).endpoint_max_capacity == 5
    with pytest.raises(SettingsError, match="endpoint_min_capacity=6 must not exceed endpoint_max_capacity=3"):
        settings.replace(endpoint_min_capacity=6)


def test_app_exits_with_the_message_and_no_traceback(tmp_path):
    """Through the real entry point, as `cdk synth -c endpoint_min_capacity=4` runs it."""
    env = {
        **os.environ,
        "CDK_OUTDIR": str(tmp_path),
        "CDK_CONTEXT_JSON": json.dumps({"endpoint_min_capacity": "4"}),
    }
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().endswith(
        "Invalid settings (fix them in cdk.json or with -c key=value):\n"
        "  - endpoint_min_capacity=4 must not exceed endpoint_max_capacity=3."
    )
    assert not list(tmp_path.glob("*.template.json"))


def test_readme_documents_every_setting_with_its_default():
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| `([^`]*)` \|", readme, flags=re.MULTILINE))
    assert set(rows) == set(Settings.keys())
    for key, value in defaults().items():
        assert rows[key] == json.dumps(value), key
