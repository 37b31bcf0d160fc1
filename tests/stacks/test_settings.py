"""Settings: the defaults reproduce the design's seed values; each bad value gets its exact message."""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import botocore
import botocore.session
import pytest
from aws_cdk import App

from dogbreeds_stacks.contract import training_hyperparameters
from dogbreeds_stacks.settings import (
    INSTANCE_TYPE_MEMBERS,
    TRAINING_HYPERPARAMETERS,
    Settings,
    SettingsError,
    defaults,
    instance_types,
)
from dogbreeds_stacks.versions import dlami_torch_minor, framework_versions, torch_minor

ROOT = Path(__file__).resolve().parents[2]


def _error(**overrides) -> list[str]:
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping({**defaults(), **overrides})
    return err.value.problems


def test_defaults_reproduce_the_design_seed_values(settings):
    assert settings.notebook_instance_type == "ml.t3.medium"
    assert settings.endpoint_instance_type == "ml.g4dn.xlarge"
    assert (settings.endpoint_min_capacity, settings.endpoint_max_capacity) == (1, 3)
    assert settings.endpoint_target_invocations_per_instance == 0, "derived from the instance type"
    assert settings.endpoint_scaling_target == 70
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
            {"lambda_provisioned_concurrency": 11},
            "lambda_provisioned_concurrency=11 must not exceed lambda_reserved_concurrency=10.",
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
            {"endpoint_model_package_arn": "arn:aws:sagemaker:eu-west-1:111122223333:model-package/other-models/3"},
            'endpoint_model_package_arn="arn:aws:sagemaker:eu-west-1:111122223333:model-package/other-models/3": '
            "accepted is empty (serve the latest approved version) or the ARN of a version of the group "
            "dogbreeds-models, such as arn:aws:sagemaker:us-east-1:111122223333:model-package/dogbreeds-models/3 "
            "(dogbreeds models lists them).",
        ),
        (
            {"model_approval": "yes"},
            'model_approval="yes": accepted is one of manual, auto.',
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
            {"endpoint_max_decode_mb": 32},
            "endpoint_max_decode_mb=32: accepted is a whole number from 64 to 8192.",
        ),
        (
            {"endpoint_max_jpeg_scans": 5},
            "endpoint_max_jpeg_scans=5: accepted is a whole number from 10 to 1000.",
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


# --- the REST API in front of the Lambda ------------------------------------------------------------------


def test_the_api_s_throttle_is_derived_from_the_endpoint_and_the_lambda(settings):
    assert (settings.api_auth, settings.api_throttle_rate_limit, settings.api_throttle_burst_limit) == ("iam", 0, 0)
    # endpoint_max_capacity 3 x 70 invocations a minute per instance / 60 = 3.5/s at the target; x 2 = 7/s.
    assert settings.api_rate_limit == 7
    assert settings.api_burst_limit == settings.lambda_reserved_concurrency == 10
    derived = Settings.load(["endpoint_max_capacity=5", "endpoint_target_invocations_per_instance=90"])
    assert derived.api_rate_limit == 15
    assert Settings.load(["endpoint_max_capacity=1", "endpoint_target_invocations_per_instance=1"]).api_rate_limit == 1
    assert Settings.load(["endpoint_target_invocations_per_instance=71"]).api_rate_limit == 8  # 7.1, rounded up
    chosen = Settings.load(["api_throttle_rate_limit=50", "api_throttle_burst_limit=4"])
    assert (chosen.api_rate_limit, chosen.api_burst_limit) == (50, 4)
    assert Settings.load(["lambda_reserved_concurrency=25"]).api_burst_limit == 25


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_auth": "oauth"}, 'api_auth="oauth": accepted is one of iam, cognito, api_key.'),
        (
            {"api_throttle_rate_limit": 20000},
            "api_throttle_rate_limit=20000: accepted is a whole number from 1 to 10000.",
        ),
        (
            {"api_throttle_burst_limit": 11},
            "api_throttle_burst_limit=11 admits 11 requests at once, more than lambda_reserved_concurrency=10: the "
            "rest would meet the Lambda's throttle instead of the API's 429. Lower the burst, raise the reserved "
            "concurrency, or set api_throttle_burst_limit=0 (the reserved concurrency).",
        ),
        (
            {"api_integration_timeout_seconds": 30},
            "api_integration_timeout_seconds=30: accepted is a whole number from 1 to 29.",
        ),
        (
            {"api_integration_timeout_seconds": 12},
            "api_integration_timeout_seconds=12 must be at least lambda_fetch_timeout_seconds=5 plus "
            "lambda_endpoint_timeout_seconds=7 plus 1 s to answer (13 s): one fetch and one endpoint call must fit "
            "before API Gateway gives up.",
        ),
        ({"api_waf_rate_limit": 5}, "api_waf_rate_limit=5: accepted is a whole number from 10 to 2000000000."),
        ({"api_waf": "sometimes"}, 'api_waf="sometimes": accepted is true or false.'),
        (
            {"api_auth": "cognito", "project_name": "awsdogs"},
            "project_name=\"awsdogs\" contains 'aws', which a Cognito domain prefix may not contain; api_auth=cognito "
            "names the user pool's domain after the project: choose another project_name or another api_auth (iam, "
            "api_key).",
        ),
    ],
)
def test_a_bad_api_setting_gives_its_exact_message(overrides, message):
    assert _error(**overrides) == [message]


def test_an_aws_project_name_is_fine_without_cognito():
    assert Settings.load(["project_name=awsdogs"]).project_name == "awsdogs"


def test_framework_version_must_be_in_sagemaker_core_tables():
    (problem,) = _error(training_framework_version="2.5.9")
    assert problem.startswith('training_framework_version="2.5.9": accepted is a PyTorch training container')
    assert "2.10.0" in problem


def test_the_cli_reads_the_settings_without_sagemaker_cores_tables():
    """Settings.load (the CLI, the demo) leaves the image versions to the app, which needs the images."""
    values = {**defaults(), "training_framework_version": "2.5.9"}
    with pytest.raises(SettingsError):
        Settings.from_mapping(values)
    assert Settings.from_mapping(values, check_images=False).training_framework_version == "2.5.9"
    assert Settings.load(["training_framework_version=2.5.9"]).training_framework_version == "2.5.9"


# --- instance types: the enums of botocore's service models ------------------------------------------------

SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")
EC2 = botocore.session.get_session().get_service_model("ec2")
TRAINING_TYPES = set(SAGEMAKER.shape_for("TrainingInstanceType").enum)
ENDPOINT_TYPES = set(SAGEMAKER.shape_for("ProductionVariantInstanceType").enum)
NOTEBOOK_TYPES = set(SAGEMAKER.shape_for("InstanceType").enum)
EC2_TYPES = set(EC2.shape_for("InstanceType").enum)
KIND = {
    "notebook_instance_type": ("a SageMaker notebook instance type such as ml.t3.medium", NOTEBOOK_TYPES),
    "training_instance_type": ("a SageMaker training instance type such as ml.g4dn.xlarge", TRAINING_TYPES),
    "tuning_instance_type": ("a SageMaker training instance type such as ml.g4dn.xlarge", TRAINING_TYPES),
    "endpoint_instance_type": ("a SageMaker endpoint instance type such as ml.g4dn.xlarge", ENDPOINT_TYPES),
    "ec2_training_instance_type": (
        "an EC2 instance type (without the ml. prefix) such as g4dn.xlarge",
        EC2_TYPES,
    ),
}


def _closest(value: str, accepted: set[str]) -> str | None:
    return next(iter(difflib.get_close_matches(value, accepted, n=1)), None)


def _instance_type_message(key: str, value: str, suggestion: str | None) -> str:
    kind, accepted = KIND[key]
    hint = f" Did you mean {suggestion}?" if suggestion else ""
    return f'{key}="{value}": accepted is {kind} (botocore {botocore.__version__}\'s list has {len(accepted)}).{hint}'


def test_each_instance_type_setting_is_checked_against_the_enum_of_its_api_member():
    assert set(INSTANCE_TYPE_MEMBERS) == set(KIND)
    for key, (_, accepted) in KIND.items():
        assert set(instance_types(key)) == accepted, key


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("notebook_instance_type", "ml.g5.xlarge"),  # in the notebook enum too
        ("training_instance_type", "ml.g5.2xlarge"),
        ("tuning_instance_type", "ml.g6.xlarge"),
        ("endpoint_instance_type", "ml.c5.xlarge"),
        ("ec2_training_instance_type", "g5.xlarge"),
    ],
)
def test_a_valid_instance_type_passes(key, value):
    assert getattr(Settings.from_mapping({**defaults(), key: value}), key) == value


def test_a_hyphenated_family_that_the_old_pattern_refused_passes():
    hyphenated = sorted(t for t in TRAINING_TYPES if "-" in t)
    assert hyphenated  # ml.c7i-flex.*, ml.p6-b200.* ...
    assert Settings.from_mapping({**defaults(), "training_instance_type": hyphenated[0]}).training_instance_type


@pytest.mark.parametrize(
    ("key", "value", "suggestion"),
    [
        ("training_instance_type", "ml.g4dn.xlarg", "ml.g4dn.xlarge"),
        ("tuning_instance_type", "ml.g4dn.xlarg", "ml.g4dn.xlarge"),
        ("notebook_instance_type", "t3.medium", "ml.t3.medium"),
        ("notebook_instance_type", "ml.t3.meduim", "ml.t3.medium"),
        ("endpoint_instance_type", "ml.g4dn", "ml.g4dn.xlarge"),
        ("ec2_training_instance_type", "ml.g4dn.xlarge", "g4dn.xlarge"),
        ("ec2_training_instance_type", "G4DN.XLARGE", "g4dn.xlarge"),
        ("training_instance_type", "gpu-please", None),
    ],
)
def test_a_wrong_instance_type_gets_a_suggestion_and_what_is_accepted(key, value, suggestion):
    assert _error(**{key: value}) == [_instance_type_message(key, value, suggestion)]


def test_an_endpoint_only_type_is_refused_for_training_and_tuning():
    endpoint_only = sorted(ENDPOINT_TYPES - TRAINING_TYPES)
    assert endpoint_only
    value = endpoint_only[0]
    assert Settings.from_mapping({**defaults(), "endpoint_instance_type": value}).endpoint_instance_type == value
    for key in ("training_instance_type", "tuning_instance_type"):
        assert _error(**{key: value}) == [_instance_type_message(key, value, _closest(value, TRAINING_TYPES))]


def test_a_training_only_type_is_refused_for_the_notebook():
    value = sorted(TRAINING_TYPES - NOTEBOOK_TYPES)[0]
    assert _error(notebook_instance_type=value) == [
        _instance_type_message("notebook_instance_type", value, _closest(value, NOTEBOOK_TYPES))
    ]


def test_context_strings_from_the_cdk_cli_are_checked_the_same_way():
    """``cdk synth -c training_instance_type=ml.g4dn.xlarg``: the value arrives as a context string."""
    app = App(context={"training_instance_type": "ml.g4dn.xlarg", "endpoint_instance_type": "ml.g5.xlarge"})
    with pytest.raises(SettingsError) as err:
        Settings.from_context(app.node.get_all_context())
    assert err.value.problems == [_instance_type_message("training_instance_type", "ml.g4dn.xlarg", "ml.g4dn.xlarge")]
    app = App(context={"training_instance_type": "ml.g5.xlarge", "ec2_training_instance_type": "g5.xlarge"})
    settings = Settings.from_context(app.node.get_all_context())
    assert (settings.training_instance_type, settings.ec2_training_instance_type) == ("ml.g5.xlarge", "g5.xlarge")


# --- torch versions: the training side must not be newer than the serving side ------------------------------

AMI_29 = "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-amazon-linux-2023/latest/ami-id"
AMI_26 = "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.6-amazon-linux-2023/latest/ami-id"
AMI_25 = "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.5-amazon-linux-2023/latest/ami-id"
BASE_AMI = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"


def test_the_default_training_and_serving_torch_exist_in_sagemaker_core_and_match(settings):
    assert settings.training_framework_version in framework_versions("training")
    assert settings.training_framework_version in framework_versions("inference")
    assert settings.inference_framework_version in framework_versions("inference")
    serving = torch_minor(settings.inference_framework_version)
    assert torch_minor(settings.training_framework_version) == serving
    assert dlami_torch_minor(settings.ec2_training_ami_parameter) == serving
    assert settings.ec2_training_ami_parameter == AMI_26


def test_a_training_container_newer_than_the_serving_one_is_refused():
    assert _error(training_framework_version="2.10.0") == [
        'training_framework_version="2.10.0" must not be newer than inference_framework_version="2.6.0" '
        "(major.minor): a model saved by torch 2.10 may not load under the endpoint's torch 2.6. Accepted is a "
        "training container version of 2.6 or older."
    ]


def test_a_deep_learning_ami_newer_than_the_serving_container_is_refused():
    assert _error(ec2_training_ami_parameter=AMI_29) == [
        f'ec2_training_ami_parameter="{AMI_29}" names PyTorch 2.9, which must not be newer than '
        'inference_framework_version="2.6.0" (major.minor): a model saved by torch 2.9 may not load under the '
        "endpoint's torch 2.6. Accepted is the parameter of a PyTorch 2.6 or older Deep Learning AMI, such as "
        f'"{AMI_26}".'
    ]


def test_an_older_serving_container_names_both_training_sides():
    assert _error(inference_framework_version="2.5.1") == [
        'training_framework_version="2.6.0" must not be newer than inference_framework_version="2.5.1" '
        "(major.minor): a model saved by torch 2.6 may not load under the endpoint's torch 2.5. Accepted is a "
        "training container version of 2.5 or older.",
        f'ec2_training_ami_parameter="{AMI_26}" names PyTorch 2.6, which must not be newer than '
        'inference_framework_version="2.5.1" (major.minor): a model saved by torch 2.6 may not load under the '
        "endpoint's torch 2.5. Accepted is the parameter of a PyTorch 2.5 or older Deep Learning AMI, such as "
        f'"{AMI_25}".',
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        {"training_framework_version": "2.5.1"},  # older than the serving side: loads
        {"ec2_training_ami_parameter": AMI_25},
        # an AMI parameter naming no PyTorch version is not compared
        {"ec2_training_ami_parameter": BASE_AMI},
    ],
)
def test_an_older_or_unversioned_training_side_passes(overrides):
    Settings.from_mapping({**defaults(), **overrides})


@pytest.mark.parametrize(
    ("parameter", "version"),
    [
        (AMI_26, (2, 6)),
        (AMI_29.replace("2.9", "2.10"), (2, 10)),
        ("/aws/service/x/pytorch-2.6.0-ubuntu/ami-id", (2, 6)),
    ],
)
def test_the_torch_version_of_an_ami_parameter(parameter, version):
    assert dlami_torch_minor(parameter) == version


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


# --- train.py's hyperparameters: one definition, in training/hyperparameters.py ----------------------------


@pytest.mark.parametrize(("key", "name"), sorted(TRAINING_HYPERPARAMETERS.items()))
def test_hyperparameter_settings_accept_exactly_what_train_py_accepts(key, name):
    """Each such setting is checked by train.py's own definition: the edges pass, one step beyond fails."""
    kind = training_hyperparameters().HYPERPARAMETERS[name].kind
    inside, outside = _edges(kind)
    base = {**defaults(), "tuning_learning_rate_min": 1e-7, "tuning_learning_rate_max": 1 - 1e-7}
    for value in inside:
        Settings.from_mapping({**base, key: value}, check_images=False)
    for value in outside:
        with pytest.raises(SettingsError) as err:
            Settings.from_mapping({**base, key: value}, check_images=False)
        assert f"{key}={json.dumps(value)}: accepted is {kind.accepted}." in err.value.problems


def _edges(kind) -> tuple[list, list]:
    if hasattr(kind, "values"):
        return list(kind.values), ["resnet9000"]
    if hasattr(kind, "low") and isinstance(kind.low, int):
        return [kind.low, kind.high], [kind.low - 1, kind.high + 1]
    return [kind.low + 1e-6, kind.high - 1e-6], [kind.low, kind.high]


def test_patience_zero_means_never_stop_early_as_in_train_py():
    assert Settings.from_mapping({**defaults(), "training_patience": 0}, check_images=False).training_patience == 0


def test_the_decoding_budgets_reach_the_models_environment(settings):
    from dogbreeds_stacks.contract import model_environment

    environment = model_environment(settings.replace(endpoint_max_decode_mb=512, endpoint_max_jpeg_scans=50), "x")
    assert (environment["MAX_DECODE_BYTES"], environment["MAX_JPEG_SCANS"]) == (str(512 * 1024 * 1024), "50")
    assert (settings.endpoint_max_decode_mb, settings.endpoint_max_jpeg_scans) == (384, 100)  # inference.py's too


# --- serving precision -----------------------------------------------------------------------------------------


def test_the_serving_precision_is_auto_by_default_and_reaches_the_models_environment(settings):
    from dogbreeds_stacks.contract import model_environment

    assert settings.inference_precision == "auto"
    assert model_environment(settings, "x")["INFERENCE_PRECISION"] == "auto"
    cpu = settings.replace(endpoint_instance_type="ml.c7i.xlarge", inference_precision="int8")
    assert model_environment(cpu, "x")["INFERENCE_PRECISION"] == "int8"


def test_the_precisions_are_inference_py_s():
    assert training_hyperparameters().INFERENCE_PRECISIONS == ("auto", "fp32", "bf16", "fp16", "int8")


@pytest.mark.parametrize(
    ("instance_type", "precision"),
    [
        ("ml.g4dn.xlarge", "auto"),
        ("ml.g4dn.xlarge", "fp16"),
        ("ml.g5.xlarge", "bf16"),
        ("ml.g4dn.xlarge", "fp32"),
        ("ml.c7i.xlarge", "auto"),
        ("ml.c7i.xlarge", "int8"),
        ("ml.c7i.xlarge", "bf16"),
        ("ml.m5.large", "fp32"),
    ],
)
def test_a_precision_the_instance_type_computes_in_passes(instance_type, precision):
    overrides = {"endpoint_instance_type": instance_type, "inference_precision": precision}
    assert Settings.from_mapping({**defaults(), **overrides}, check_images=False).inference_precision == precision


def test_int8_on_a_gpu_type_is_refused():
    assert _error(inference_precision="int8") == [
        'inference_precision="int8" needs a CPU type (PyTorch\'s x86 int8 backend runs on CPUs only), and '
        'endpoint_instance_type="ml.g4dn.xlarge" is an NVIDIA GPU type: accepted with it are auto, fp32, bf16 and '
        "fp16; or choose another endpoint_instance_type."
    ]


def test_fp16_on_a_cpu_type_is_refused():
    assert _error(inference_precision="fp16", endpoint_instance_type="ml.c7i.xlarge") == [
        'inference_precision="fp16" needs an NVIDIA GPU type, and endpoint_instance_type="ml.c7i.xlarge" is a CPU '
        "type: accepted with it are auto, fp32, bf16 and int8; or choose another endpoint_instance_type."
    ]


@pytest.mark.parametrize("value", ["fp8", "INT8", "", "off"])
def test_an_unknown_precision_is_refused_with_the_accepted_ones(value):
    assert _error(inference_precision=value) == [
        f"inference_precision={json.dumps(value)}: accepted is one of auto, fp32, bf16, fp16, int8."
    ]
