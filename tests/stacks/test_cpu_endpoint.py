"""The CPU endpoint option: what an x86 CPU instance type changes, from the settings to the templates and the cost."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from dogbreeds import cost
from dogbreeds.ops.preflight import endpoint_needs
from dogbreeds_stacks.instances import (
    cpu_serving_threads,
    derived_invocations_per_minute,
    is_gpu,
    serving_environment,
    serving_problem,
    vcpus,
)
from dogbreeds_stacks.settings import Settings, SettingsError, defaults, instance_types
from tests.helpers import arn_text, one, resources
from tests.synth import synthesize
from tests.test_gates import CFN_LINT, ROOT

CPU_TYPE = "ml.c7i.xlarge"


@pytest.fixture(scope="module")
def cpu(tmp_path_factory):
    """The whole app with the endpoint on ml.c7i.xlarge (the synth fails on any unacknowledged cdk-nag finding)."""
    return synthesize(tmp_path_factory.mktemp("cpu-endpoint"), endpoint_instance_type=CPU_TYPE)


# --- what an instance type implies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("ml.c7i.large", 2),
        ("ml.c7i.xlarge", 4),
        ("ml.c7i.2xlarge", 8),
        ("ml.c7i.48xlarge", 192),
        ("ml.m4.10xlarge", 40),
        ("ml.c5.9xlarge", 36),
        ("ml.c4.8xlarge", 36),  # the exception to 4 per xlarge
        ("ml.t2.medium", 2),
        ("ml.c6g.medium", 1),
        ("c7i.xlarge", 4),
    ],
)
def test_vcpus_come_from_the_size(instance_type, expected):
    assert vcpus(instance_type) == expected


def test_every_endpoint_type_botocore_knows_has_a_vcpu_count_and_a_size_is_required():
    assert all(vcpus(t) >= 1 for t in instance_types("endpoint_instance_type"))
    with pytest.raises(ValueError, match=r"no vCPU count is known for the size 'metal' of ml\.c7i\.metal"):
        vcpus("ml.c7i.metal")
    with pytest.raises(ValueError, match="not an instance type"):
        vcpus("c7i")


def test_workers_times_threads_never_exceed_the_vcpus_of_any_cpu_type():
    cpu_types = [t for t in instance_types("endpoint_instance_type") if not is_gpu(t) and not serving_problem(t)]
    assert CPU_TYPE in cpu_types and len(cpu_types) > 50
    for instance_type in cpu_types:
        workers, threads = cpu_serving_threads(instance_type)
        assert workers >= 1 and threads >= 1
        assert workers * threads <= vcpus(instance_type), instance_type
    assert cpu_serving_threads("ml.c7i.large") == (1, 2)
    assert cpu_serving_threads("ml.c7i.8xlarge") == (16, 2)


def test_cpu_types_set_the_toolkits_workers_and_openmp_threads_and_gpu_types_keep_the_defaults():
    # SAGEMAKER_MODEL_SERVER_WORKERS: sagemaker_inference.parameters.MODEL_SERVER_WORKERS_ENV, which the PyTorch
    # toolkit writes as TorchServe's default_workers_per_model.
    from sagemaker_inference import parameters

    assert parameters.MODEL_SERVER_WORKERS_ENV == "SAGEMAKER_MODEL_SERVER_WORKERS"
    assert serving_environment(CPU_TYPE) == {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "OMP_NUM_THREADS": "2"}
    assert serving_environment("ml.g4dn.xlarge") == serving_environment("ml.g5.12xlarge") == {}


def test_the_blackwell_g7_family_is_a_gpu_and_arm_and_accelerator_families_have_no_pytorch_image():
    assert is_gpu("ml.g7.2xlarge") and is_gpu("ml.g7e.2xlarge") and not is_gpu(CPU_TYPE)
    for instance_type in ("ml.c7g.xlarge", "ml.m6gd.large", "ml.r8g.xlarge", "ml.inf2.xlarge", "ml.trn1.2xlarge"):
        assert serving_problem(instance_type), instance_type
    for instance_type in (CPU_TYPE, "ml.c6i.xlarge", "ml.m5d.large", "ml.g4dn.xlarge", "ml.g6e.xlarge"):
        assert serving_problem(instance_type) is None, instance_type


# --- settings -------------------------------------------------------------------------------------------


def test_the_scaling_target_is_derived_from_the_type_unless_it_is_set():
    assert Settings.load().endpoint_scaling_target == 70
    cpu = Settings.load([f"endpoint_instance_type={CPU_TYPE}"])
    # 4 vCPUs / 0.144 s per request = 27.8 requests/s at the peak, 1666 a minute; half of it is the target.
    assert cpu.endpoint_scaling_target == derived_invocations_per_minute(CPU_TYPE) == 833
    assert Settings.load(["endpoint_instance_type=ml.c7i.large"]).endpoint_scaling_target == 416
    explicit = Settings.load([f"endpoint_instance_type={CPU_TYPE}", "endpoint_target_invocations_per_instance=500"])
    assert explicit.endpoint_scaling_target == 500
    assert Settings.load(["endpoint_target_invocations_per_instance=90"]).endpoint_scaling_target == 90
    # The API's derived rate follows the derived target: 3 instances x 833 / 60 x 2, rounded up.
    assert cpu.api_rate_limit == 84


def test_a_cpu_type_is_accepted_and_a_type_without_a_pytorch_image_is_refused():
    assert Settings.from_mapping({**defaults(), "endpoint_instance_type": CPU_TYPE}).endpoint_instance_type == CPU_TYPE
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping({**defaults(), "endpoint_instance_type": "ml.c7g.xlarge"})
    assert err.value.problems == [
        'endpoint_instance_type="ml.c7g.xlarge": the c7g family needs another serving image than the PyTorch '
        "inference container's x86_64 CPU and NVIDIA GPU builds (Graviton and Grace are arm64; Inferentia, Trainium "
        "and Gaudi need their own SDKs). Accepted is an NVIDIA GPU type (ml.g4dn.xlarge, ml.g5.xlarge, ...) or an "
        "x86 CPU type (ml.c7i.xlarge, ml.m7i.xlarge, ml.c6i.xlarge, ...)."
    ]
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping({**defaults(), "endpoint_target_invocations_per_instance": -1})
    assert err.value.problems == [
        "endpoint_target_invocations_per_instance=-1: accepted is a whole number of at least 0."
    ]


def test_preflight_asks_for_the_cpu_types_endpoint_quota():
    needs = endpoint_needs(Settings.load([f"endpoint_instance_type={CPU_TYPE}"]))
    assert [n.quota_name for n in needs] == [
        "ml.c7i.xlarge for endpoint usage",
        "Number of instances across active endpoints",
    ]
    assert [n.needed for n in needs] == [6, 6]


# --- the templates --------------------------------------------------------------------------------------


def test_the_cpu_app_passes_cdk_nag_and_cfn_lint(cpu):
    assert cpu.validation_violations() == []
    paths = [str(p) for p in cpu.template_paths()]
    result = subprocess.run([str(CFN_LINT), *paths], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cpu_endpoint_runs_two_workers_of_two_threads_and_tracks_the_cpu_target(cpu):
    template = cpu.template("endpoint")
    assert template["Description"].startswith("Dog-breed classifier: CPU real-time endpoint")
    _, config = one(template, "AWS::SageMaker::EndpointConfig")
    (variant,) = config["Properties"]["ProductionVariants"]
    assert variant["InstanceType"] == CPU_TYPE
    assert "KmsKeyId" in config["Properties"], "c7i has no NVMe instance storage: its volume takes the key"
    _, model = one(template, "AWS::SageMaker::Model")
    environment = model["Properties"]["PrimaryContainer"]["Environment"]
    assert (environment["SAGEMAKER_MODEL_SERVER_WORKERS"], environment["OMP_NUM_THREADS"]) == ("2", "2")
    _, policy = one(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 833


def test_the_cpu_dashboard_has_no_gpu_graphs(cpu, endpoint_gpu_dashboard_titles):
    _, dashboard = one(cpu.template("endpoint"), "AWS::CloudWatch::Dashboard")
    body = arn_text(dashboard["Properties"]["DashboardBody"])
    titles = {w["properties"].get("title") for w in json.loads(body)["widgets"]}
    assert "GPUUtilization" not in body and "GPUMemoryUtilization" not in body
    assert "CPU, memory and disk (% per instance; CPU 100 per vCPU)" in titles
    assert endpoint_gpu_dashboard_titles - titles == {
        "GPU utilization (% per instance, 100 per GPU)",
        "GPU memory (% per instance, 100 per GPU)",
    }


@pytest.fixture(scope="module")
def endpoint_gpu_dashboard_titles(assembly) -> set[str]:
    _, dashboard = one(assembly.template("endpoint"), "AWS::CloudWatch::Dashboard")
    return {
        w["properties"].get("title") for w in json.loads(arn_text(dashboard["Properties"]["DashboardBody"]))["widgets"]
    }


def test_models_are_registered_with_the_cpu_image_for_the_cpu_family(cpu):
    machines = resources(cpu.template("training"), "AWS::StepFunctions::StateMachine").values()
    (definition,) = [
        text
        for text in (arn_text(m["Properties"]["DefinitionString"]) for m in machines)
        if "SupportedRealtimeInferenceInstanceTypes" in text
    ]
    assert re.search(r"/pytorch-inference:2\.6\.0-cpu-py3\d+", definition)
    assert "-gpu-py3" not in definition.split("pytorch-inference:", 1)[1].split('"', 1)[0]
    supported = json.loads(re.search(r'"SupportedRealtimeInferenceInstanceTypes":(\[[^\]]*\])', definition).group(1))
    assert supported[0] == CPU_TYPE and all(t.startswith("ml.c7i.") for t in supported)
    assert '"SAGEMAKER_MODEL_SERVER_WORKERS":"2"' in definition and '"OMP_NUM_THREADS":"2"' in definition


# --- the cost -----------------------------------------------------------------------------------------


def test_cost_compares_the_cpu_option_with_the_gpu_default_per_month_and_per_million():
    prices = cost.load_prices()
    estimate = cost.estimate(Settings.load([f"endpoint_instance_type={CPU_TYPE}"]), prices, cost.Usage())
    hourly = prices["sagemaker_hosting_per_hour"][CPU_TYPE]
    assert hourly == 0.2142
    (line,) = [x for x in estimate.per_million if x.item == "Endpoint at the scaling target"]
    assert line.low == pytest.approx(hourly / (833 * 60) * 1e6)
    assert line.detail.startswith("833 invocations/min per ml.c7i.xlarge: 4 vCPUs / 144 ms of vCPU time")
    cpu_option, gpu_option = estimate.endpoint_options
    assert (cpu_option.instance_type, cpu_option.configured, gpu_option.instance_type) == (
        CPU_TYPE,
        True,
        "ml.g4dn.xlarge",
    )
    assert cpu_option.monthly.low == pytest.approx(hourly * 730)
    assert cpu_option.monthly.high == pytest.approx(3 * hourly * 730)
    gpu_hourly = prices["sagemaker_hosting_per_hour"]["ml.g4dn.xlarge"]
    assert gpu_option.per_million == pytest.approx(gpu_hourly / (70 * 60) * 1e6)
    assert "not a measurement" in gpu_option.basis
    text = cost.render(estimate)
    assert "Endpoint on a GPU or a CPU type" in text
    assert "SageMaker hosting prices of ml.c7i.large, ml.c7i.xlarge, ml.c7i.2xlarge as of 2026-12-02" in text
    assert "ml.c7i.xlarge (CPU) *" in text and "ml.g4dn.xlarge (GPU)  " in text


def test_an_explicit_target_is_the_configured_options_assumption():
    settings = Settings.load([f"endpoint_instance_type={CPU_TYPE}", "endpoint_target_invocations_per_instance=600"])
    options = cost.endpoint_options(settings, cost.load_prices())
    assert [(o.instance_type, o.invocations_per_minute) for o in options] == [(CPU_TYPE, 600), ("ml.g4dn.xlarge", 70)]
    assert options[0].basis == "endpoint_target_invocations_per_instance, as set"
