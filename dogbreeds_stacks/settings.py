"""Every tunable of the system, in one frozen, typed object, read and validated in one place.

The defaults live in ``cdk.json`` under ``context``; any of them can be overridden with ``-c key=value``
(the CDK CLI and the operator CLI hand those over as strings, parsed here by the field's type). The app
reads them once (``Settings.from_context``), the operator CLI and the local demo with ``Settings.load``;
stacks receive the object and never read context. This module imports no CDK: the CLI starts fast.

Bad values stop with one message that names each wrong key, its value and what is accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import json
import math
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dogbreeds_stacks.api_contract import MAX_INTEGRATION_TIMEOUT_SECONDS
from dogbreeds_stacks.contract import CDK_JSON, DOG_BREEDS, training_hyperparameters
from dogbreeds_stacks.instances import derived_invocations_per_minute, is_gpu, serving_problem
from dogbreeds_stacks.names import Names
from dogbreeds_stacks.versions import dlami_torch_minor, torch_minor, with_dlami_torch

# Values CloudWatch Logs accepts for a log group's retention, in days, with the CDK's names for them.
RETENTION_NAMES = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
    60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
    365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS",
    1827: "FIVE_YEARS", 2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}  # fmt: skip
LOG_RETENTION_DAYS = tuple(RETENTION_NAMES)

# A SageMaker endpoint name: lowercase letters, digits and single hyphens, at most 63 characters.
# (SageMaker writes endpoint ARNs in lowercase; a lowercase name keeps IAM resource ARNs exact.)
ENDPOINT_NAME = re.compile(r"^[a-z0-9](-?[a-z0-9]){0,62}$")
SSM_AMI_PARAMETER = re.compile(r"^/aws/service/[A-Za-z0-9_./-]+/ami-id$")
RUN_ID = re.compile(r"^[A-Za-z0-9-]{1,32}$")
PROJECT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,19}$")
# model_approval: what a model that passes the quality gate is registered as.
MODEL_APPROVAL = ("manual", "auto")
# api_auth: how clients of the REST API authenticate.
API_AUTH = ("iam", "cognito", "api_key")
# The derived API rate: SageMaker's load-testing guide sets the scaling target at MAX_RPS x SAFETY_FACTOR, starting
# from a factor of 0.5, so an instance serves about twice its target before its latency climbs. A fleet at its
# maximum capacity therefore takes about 2 x endpoint_max_capacity x target / 60 requests per second.
API_CAPACITY_HEADROOM = 2
# API Gateway's account-level throttle in most regions (requests per second, burst): a stage cannot exceed it.
API_ACCOUNT_RATE_LIMIT = 10_000
API_ACCOUNT_BURST_LIMIT = 5_000
# A WAF rate-based rule's limit (requests per 5 minutes from one IP).
WAF_RATE_LIMIT_RANGE = (10, 2_000_000_000)
# Words a Cognito domain prefix may not contain (api_auth=cognito names its domain after project_name).
COGNITO_RESERVED_WORDS = ("aws", "amazon", "cognito")


@dataclass(frozen=True)
class InstanceTypeMember:
    """Where an instance-type setting ends up in an AWS API call; the member's enum is what is accepted."""

    kind: str  # how messages name it: "a SageMaker training instance type"
    example: str
    service: str
    operation: str
    path: tuple[str, ...]  # members from the operation's input, through lists, to the instance type


# The enums come from the installed botocore's service models (SageMaker's TrainingInstanceType,
# ProductionVariantInstanceType and InstanceType; EC2's InstanceType), found by walking each operation's input.
INSTANCE_TYPE_MEMBERS = {
    "notebook_instance_type": InstanceTypeMember(
        "a SageMaker notebook instance type", "ml.t3.medium", "sagemaker", "CreateNotebookInstance", ("InstanceType",)
    ),
    "training_instance_type": InstanceTypeMember(
        "a SageMaker training instance type",
        "ml.g4dn.xlarge",
        "sagemaker",
        "CreateTrainingJob",
        ("ResourceConfig", "InstanceType"),
    ),
    "tuning_instance_type": InstanceTypeMember(
        "a SageMaker training instance type",
        "ml.g4dn.xlarge",
        "sagemaker",
        "CreateHyperParameterTuningJob",
        ("TrainingJobDefinition", "ResourceConfig", "InstanceType"),
    ),
    "endpoint_instance_type": InstanceTypeMember(
        "a SageMaker endpoint instance type",
        "ml.g4dn.xlarge",
        "sagemaker",
        "CreateEndpointConfig",
        ("ProductionVariants", "InstanceType"),
    ),
    "ec2_training_instance_type": InstanceTypeMember(
        "an EC2 instance type (without the ml. prefix)", "g4dn.xlarge", "ec2", "RunInstances", ("InstanceType",)
    ),
}


@functools.cache
def _service_model(service: str):
    import botocore.session  # on first use only: both models load in about 0.2 s, once per process

    return botocore.session.get_session().get_service_model(service)


@functools.cache
def instance_types(key: str) -> tuple[str, ...]:
    """The instance types the installed botocore's service model accepts for the setting ``key``."""
    member = INSTANCE_TYPE_MEMBERS[key]
    shape = _service_model(member.service).operation_model(member.operation).input_shape
    for name in member.path:
        while shape.type_name == "list":
            shape = shape.member
        shape = shape.members[name]
    if not shape.enum:
        raise LookupError(f"botocore's {member.service} {member.operation} {'.'.join(member.path)} has no enum")
    return tuple(shape.enum)


def _botocore_version() -> str:
    import botocore

    return botocore.__version__


# The settings that are train.py hyperparameters: their accepted values are train.py's (one definition).
TRAINING_HYPERPARAMETERS = {
    "training_epochs": "epochs",
    "training_batch_size": "batch_size",
    "training_learning_rate": "learning_rate",
    "training_backbone": "backbone",
    "training_trainable": "trainable",
    "training_patience": "patience",
    "tuning_epochs": "epochs",
    "tuning_learning_rate_min": "learning_rate",
    "tuning_learning_rate_max": "learning_rate",
}


class SettingsError(ValueError):
    """One or more settings are wrong; the message lists each with its key, value and what is accepted."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid settings (fix them in cdk.json or with -c key=value):\n{lines}")


_TRAIN = training_hyperparameters()


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The whole system's configuration. Field names are the context keys."""

    # --- names and shared infrastructure -------------------------------------------------------
    project_name: str = field(metadata=_doc("Prefix of every stack name and resource name."))
    retain_data: bool = field(
        metadata=_doc("Keep the artifact and log buckets (and their objects) when a stack is deleted.")
    )
    vpc_cidr: str = field(metadata=_doc("CIDR block of the VPC (two availability zones)."))
    nat_gateways: int = field(
        metadata=_doc("NAT gateways for private-subnet egress: 1 (default), 2 (one per AZ) or 0 (none).")
    )
    log_retention_days: int = field(metadata=_doc("Retention of every CloudWatch log group, in days."))
    access_log_retention_days: int = field(metadata=_doc("Days S3 server access logs are kept."))

    # --- notebook --------------------------------------------------------------------------------
    notebook_instance_type: str = field(metadata=_doc("SageMaker notebook instance type."))
    notebook_volume_size_gb: int = field(metadata=_doc("Notebook EBS volume size in GB."))
    notebook_idle_minutes: int = field(metadata=_doc("Minutes without activity before the notebook stops."))

    # --- training ---------------------------------------------------------------------------------
    training_framework_version: str = field(
        metadata=_doc(
            "PyTorch training Deep Learning Container version (as in sagemaker-core's tables); not newer "
            "(major.minor) than inference_framework_version, so that the endpoint's torch loads the model."
        )
    )
    training_instance_type: str = field(metadata=_doc("Instance type of the final training job."))
    training_instance_count: int = field(
        metadata=_doc("Instances of the final training job (PyTorch DDP across all of them).")
    )
    training_volume_size_gb: int = field(metadata=_doc("Training job EBS volume size in GB."))
    training_backbone: str = field(metadata=_doc("ResNet backbone: " + ", ".join(_TRAIN.BACKBONES) + "."))
    training_trainable: str = field(
        metadata=_doc("What is fine-tuned: " + ", ".join(_TRAIN.TRAINABLE) + " (last_block: layer4 and head).")
    )
    training_patience: int = field(metadata=_doc("Stop early after this many epochs without a better valid loss."))
    training_epochs: int = field(metadata=_doc("Epochs of the final training job."))
    training_batch_size: int = field(metadata=_doc("Batch size per GPU when tuning is off."))
    training_learning_rate: float = field(metadata=_doc("Learning rate when tuning is off."))
    training_max_runtime_seconds: int = field(metadata=_doc("Stop a training job after this many seconds."))
    training_use_spot: bool = field(metadata=_doc("Managed spot training (resumes from S3 checkpoints)."))
    training_max_wait_seconds: int = field(
        metadata=_doc("With spot: the most seconds to wait for capacity plus run time.")
    )
    quality_gate_min_test_accuracy: float = field(
        metadata=_doc("The pipeline fails when the final model's test accuracy is below this (0 to 1).")
    )
    model_approval: str = field(
        metadata=_doc(
            "How a model that passes the quality gate is registered: manual (PendingManualApproval, a person "
            "approves it: dogbreeds approve) or auto (Approved)."
        )
    )

    # --- hyperparameter tuning -----------------------------------------------------------------
    tuning_enabled: bool = field(metadata=_doc("Tune hyperparameters before the final job, unless the input says."))
    tuning_instance_type: str = field(metadata=_doc("Instance type of each tuning trial (one instance each)."))
    tuning_max_jobs: int = field(metadata=_doc("Training jobs a tuning run may start."))
    tuning_max_parallel_jobs: int = field(metadata=_doc("Tuning trials running at once."))
    tuning_epochs: int = field(metadata=_doc("Epochs of each tuning trial."))
    tuning_learning_rate_min: float = field(metadata=_doc("Lower bound of the learning-rate range (log scale)."))
    tuning_learning_rate_max: float = field(metadata=_doc("Upper bound of the learning-rate range (log scale)."))
    tuning_batch_sizes: tuple[int, ...] = field(metadata=_doc("Batch sizes the tuner chooses from."))

    # --- EC2 training -------------------------------------------------------------------------
    ec2_training_instance_type: str = field(
        metadata=_doc("EC2 instance type for training on a Deep Learning AMI (a GPU type).")
    )
    ec2_training_volume_size_gb: int = field(metadata=_doc("Root volume of the EC2 training instance in GB."))
    ec2_training_ami_parameter: str = field(
        metadata=_doc(
            "Public SSM parameter of the PyTorch Deep Learning AMI (its version is a pin to review; its PyTorch "
            "not newer than inference_framework_version)."
        )
    )
    ec2_training_run_id: str = field(metadata=_doc("Change it to launch a new EC2 training run on the next deploy."))

    # --- endpoint ----------------------------------------------------------------------------
    endpoint_name: str = field(metadata=_doc("Stable name of the real-time endpoint."))
    inference_framework_version: str = field(
        metadata=_doc("PyTorch inference Deep Learning Container version (as in sagemaker-core's tables).")
    )
    endpoint_instance_type: str = field(
        metadata=_doc(
            "Endpoint instance type: an NVIDIA GPU type (the default) or an x86 CPU type such as ml.c7i.xlarge; it "
            "picks the serving image (GPU or CPU build) when a model is registered, and on a CPU type the model "
            "server's workers and threads (workers x threads = the vCPUs)."
        )
    )
    endpoint_min_capacity: int = field(metadata=_doc("Autoscaling minimum (also the initial instance count)."))
    endpoint_max_capacity: int = field(metadata=_doc("Autoscaling maximum instance count."))
    endpoint_target_invocations_per_instance: int = field(
        metadata=_doc(
            "Target of SageMakerVariantInvocationsPerInstance (invocations per minute per instance). 0: derived "
            "from endpoint_instance_type: 70 on a GPU type; on a CPU type half its peak, vCPUs / 0.144 s of vCPU "
            "time per request x 60 x 0.5 (ml.c7i.xlarge: 833), from the fp32 request of docs/benchmarks.md."
        )
    )
    endpoint_scale_in_cooldown_seconds: int = field(metadata=_doc("Seconds between scale-in activities."))
    endpoint_scale_out_cooldown_seconds: int = field(metadata=_doc("Seconds between scale-out activities."))
    endpoint_model_package_arn: str = field(
        metadata=_doc(
            "Serve this version of the model package group (its ARN) instead of the latest approved one "
            "(empty: the latest approved)."
        )
    )
    endpoint_latency_alarm_ms: int = field(metadata=_doc("Alarm (and roll back) when p90 model latency exceeds this."))
    top_k: int = field(metadata=_doc("Predictions returned per image unless the request asks otherwise."))
    endpoint_max_decode_mb: int = field(
        metadata=_doc(
            "Memory a request's images may take to decode, all of them together, in MiB (every pixel buffer of "
            "every conversion counted): more is a 413 before any pixel is decoded."
        )
    )
    endpoint_max_jpeg_scans: int = field(
        metadata=_doc(
            "Scans a JPEG may have (each is a pass over the whole image; cameras write about 10): more is a 413."
        )
    )
    inference_precision: str = field(
        metadata=_doc(
            "What the endpoint computes in: auto (fp16 on a GPU type; on a CPU type bf16 where the CPU has native "
            "BF16, AVX512-BF16 or AMX, else fp32), fp32, bf16, fp16 (GPU types only) or int8 (CPU types only: the "
            "final training job also writes a statically quantized model, served when it loses at most 1 point of "
            "test top-1 accuracy against fp32, else the endpoint serves fp32 and logs why)."
        )
    )

    # --- invoker Lambda ------------------------------------------------------------------------
    lambda_memory_mb: int = field(metadata=_doc("Memory of the invoker Lambda in MB."))
    lambda_timeout_seconds: int = field(metadata=_doc("Timeout of the invoker Lambda in seconds."))
    lambda_reserved_concurrency: int = field(metadata=_doc("Reserved concurrency of the invoker Lambda."))
    lambda_provisioned_concurrency: int = field(metadata=_doc("Provisioned concurrency on the `live` alias (0: none)."))
    lambda_provisioned_autoscaling: bool = field(
        metadata=_doc("Target-track provisioned concurrency on its utilization.")
    )
    lambda_provisioned_max: int = field(metadata=_doc("With autoscaling: the most provisioned concurrency."))
    lambda_provisioned_utilization_target: float = field(
        metadata=_doc("With autoscaling: target provisioned-concurrency utilization (0 to 1).")
    )
    lambda_allow_http_urls: bool = field(metadata=_doc("Let the Lambda fetch http:// URLs (https only when false)."))
    lambda_max_image_mb: int = field(metadata=_doc("Largest image the Lambda accepts or fetches, in MB."))
    lambda_fetch_timeout_seconds: int = field(metadata=_doc("Connect and read timeout of the Lambda's URL fetch."))
    lambda_endpoint_timeout_seconds: int = field(
        metadata=_doc("Read timeout of one endpoint call from the Lambda, in seconds.")
    )
    lambda_endpoint_max_attempts: int = field(
        metadata=_doc(
            "Endpoint calls the Lambda makes when throttled or unavailable (first call included); never again "
            "after a read timeout."
        )
    )

    # --- the REST API in front of the Lambda -----------------------------------------------------
    api_auth: str = field(
        metadata=_doc(
            "How clients authenticate to POST /predict: iam (requests signed with SigV4 by IAM principals allowed "
            "execute-api:Invoke), cognito (an access token of the stack's Cognito user pool, client-credentials "
            "grant) or api_key (an x-api-key header: it identifies a client of the usage plan and authenticates "
            "nobody; for trusted clients only)."
        )
    )
    api_throttle_rate_limit: int = field(
        metadata=_doc(
            "Requests per second the API admits, steadily (more are answered 429). 0: derived from the endpoint, "
            "endpoint_max_capacity x endpoint_target_invocations_per_instance (or its derived value) / 60 x 2, "
            "rounded up: SageMaker's load-testing guide puts the scaling target at half an instance's peak, so the "
            "fleet at its maximum serves about twice its target."
        )
    )
    api_throttle_burst_limit: int = field(
        metadata=_doc(
            "Requests the API admits at once above the steady rate. 0: derived, lambda_reserved_concurrency (more "
            "at once would meet the Lambda's own throttle instead of a clean 429). API Gateway applies its "
            "throttles as best effort; the Lambda's reserved concurrency stays the hard cap."
        )
    )
    api_integration_timeout_seconds: int = field(
        metadata=_doc(
            "Seconds API Gateway waits for the Lambda (1 to 29); the Lambda starts no endpoint retry that would "
            "end after it, and answers 504 itself."
        )
    )
    api_cloudwatch_role: bool = field(
        metadata=_doc(
            "Set API Gateway's CloudWatch Logs role for this account and region (AWS::ApiGateway::Account), which "
            "the API's logs need and a new account lacks; the role is kept when the stack is deleted, as other APIs "
            "of the account may use it. false: the account has one already (aws apigateway get-account)."
        )
    )
    api_waf: bool = field(
        metadata=_doc(
            "Put an AWS WAF web ACL in front of the API: AWS managed rules (common attacks, known bad inputs, IP "
            "reputation) and a rate limit per client IP (dogbreeds cost prices it)."
        )
    )
    api_waf_rate_limit: int = field(
        metadata=_doc("With api_waf: requests one client IP may send in 5 minutes before WAF answers it 429.")
    )

    # ------------------------------------------------------------------------------------------

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def docs(cls) -> dict[str, str]:
        return {f.name: f.metadata["doc"] for f in dataclasses.fields(cls)}

    @classmethod
    def from_context(cls, context: Mapping[str, object], *, check_images: bool = True) -> Settings:
        """The settings of an app: cdk.json's defaults under the app's context (cdk.json, cdk.context.json,
        ``-c key=value``); CDK's own context keys are left out."""
        given = {k: v for k, v in context.items() if _is_settings_key(k) and v is not None}
        return cls.from_mapping({**defaults(), **given}, check_images=check_images)

    @classmethod
    def load(cls, overrides: Sequence[str] = (), *, cdk_json: Path | None = None) -> Settings:
        """cdk.json's defaults with ``KEY=VALUE`` overrides, as the operator CLI and the local demo take them.

        The container images are not checked (sagemaker-core's tables take seconds to import); the app,
        which needs them, checks them.
        """
        values = defaults(cdk_json or CDK_JSON)
        problems = []
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                problems.append(f"-c {item}: takes KEY=VALUE, for example -c project_name=dogbreeds")
                continue
            values[key.strip()] = value
        if problems:
            raise SettingsError(problems)
        return cls.from_mapping(values, check_images=False)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], *, check_images: bool = True) -> Settings:
        """Parse and validate a complete mapping of key to value (JSON values or -c strings)."""
        problems: list[str] = []
        parsed: dict[str, object] = {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in values:
                problems.append(f"{f.name} is missing: every setting needs a default in cdk.json's context.")
                continue
            try:
                parsed[f.name] = _parse(hints[f.name], values[f.name])
            except ValueError as err:
                problems.append(f"{f.name}={_show(values[f.name])}: {err}")
        problems.extend(_unknown_key_message(key) for key in sorted(set(values) - set(cls.keys())))
        if len(parsed) < len(hints):
            raise SettingsError(problems)
        settings = cls(**parsed)  # type: ignore[arg-type]
        problems.extend(settings.problems())
        if check_images:
            problems.extend(settings.image_problems())
        if problems:
            raise SettingsError(problems)
        return settings

    def replace(self, **changes: object) -> Settings:
        """A copy with some values changed, validated like any other."""
        return type(self).from_mapping({**dataclasses.asdict(self), **changes})

    # --- validation -------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every wrong value, each as one sentence naming the key, the value and what is accepted."""
        check = _Checker(self)
        for group in (
            self._shared_problems,
            self._training_problems,
            self._tuning_problems,
            self._ec2_problems,
            self._endpoint_problems,
            self._lambda_problems,
            self._api_problems,
        ):
            group(check)
        return check.problems

    def image_problems(self) -> list[str]:
        """The container versions, against sagemaker-core's tables (imported here, on first use)."""
        from dogbreeds_stacks.versions import framework_versions

        check = _Checker(self)
        for key, scope in (("training_framework_version", "training"), ("inference_framework_version", "inference")):
            versions = framework_versions(scope)
            if getattr(self, key) not in versions:
                check.fail(key, f"a PyTorch {scope} container version known to sagemaker-core: " + ", ".join(versions))
        return check.problems

    def _shared_problems(self, check: _Checker) -> None:
        check.pattern("project_name", PROJECT_NAME, "2-20 lowercase letters, digits or hyphens, starting with a letter")
        check.cidr("vpc_cidr")
        check.one_of("nat_gateways", (0, 1, 2))
        check.one_of("log_retention_days", LOG_RETENTION_DAYS)
        check.at_least("access_log_retention_days", 1)
        for key in INSTANCE_TYPE_MEMBERS:
            check.instance_type(key)
        check.between("notebook_volume_size_gb", 5, 16384)
        check.between("notebook_idle_minutes", 5, 1440)

    def _training_problems(self, check: _Checker) -> None:
        self._check_torch_not_newer_than_serving(check)
        check.between("training_instance_count", 1, 20)
        check.between("training_volume_size_gb", 1, 16384)
        for key, hyperparameter in TRAINING_HYPERPARAMETERS.items():
            check.hyperparameter(key, hyperparameter)
        check.between("training_max_runtime_seconds", 60, 28 * 24 * 3600)
        if self.training_use_spot and self.training_max_wait_seconds < self.training_max_runtime_seconds:
            check.problems.append(
                f"training_max_wait_seconds={self.training_max_wait_seconds} must be at least "
                f"training_max_runtime_seconds={self.training_max_runtime_seconds} when training_use_spot=true "
                "(SageMaker counts the run time inside the wait)."
            )
        check.closed_interval("quality_gate_min_test_accuracy", 0.0, 1.0)
        check.one_of("model_approval", MODEL_APPROVAL)

    def _tuning_problems(self, check: _Checker) -> None:
        check.between("tuning_max_jobs", 1, 500)
        check.between("tuning_max_parallel_jobs", 1, 100)
        if self.tuning_max_parallel_jobs > self.tuning_max_jobs:
            check.problems.append(
                f"tuning_max_parallel_jobs={self.tuning_max_parallel_jobs} must not exceed "
                f"tuning_max_jobs={self.tuning_max_jobs}."
            )
        if self.tuning_learning_rate_min >= self.tuning_learning_rate_max:
            check.problems.append(
                f"tuning_learning_rate_min={self.tuning_learning_rate_min} must be below "
                f"tuning_learning_rate_max={self.tuning_learning_rate_max}."
            )
        batch_size = training_hyperparameters().HYPERPARAMETERS["batch_size"].kind
        if not self.tuning_batch_sizes or not all(batch_size.accepts(b) for b in self.tuning_batch_sizes):
            check.problems.append(
                f"tuning_batch_sizes={_show(list(self.tuning_batch_sizes))}: accepted is a non-empty list of "
                f"batch sizes from {batch_size.low} to {batch_size.high}, for example 32,64,128."
            )
        elif len(set(self.tuning_batch_sizes)) != len(self.tuning_batch_sizes):
            check.problems.append(
                f"tuning_batch_sizes={_show(list(self.tuning_batch_sizes))}: each batch size may appear once."
            )

    def _ec2_problems(self, check: _Checker) -> None:
        check.between("ec2_training_volume_size_gb", 75, 16384)
        check.pattern(
            "ec2_training_ami_parameter",
            SSM_AMI_PARAMETER,
            "a public SSM parameter path such as /aws/service/deeplearning/ami/x86_64/<name>/latest/ami-id",
        )
        check.pattern("ec2_training_run_id", RUN_ID, "1-32 letters, digits or hyphens")

    def _endpoint_problems(self, check: _Checker) -> None:
        check.pattern("endpoint_name", ENDPOINT_NAME, "1-63 lowercase letters, digits or single hyphens")
        check.at_least("endpoint_min_capacity", 1)
        check.at_least("endpoint_max_capacity", 1)
        if self.endpoint_min_capacity > self.endpoint_max_capacity:
            check.problems.append(
                f"endpoint_min_capacity={self.endpoint_min_capacity} must not exceed "
                f"endpoint_max_capacity={self.endpoint_max_capacity}."
            )
        check.at_least("endpoint_target_invocations_per_instance", 0)
        self._check_endpoint_instance_type(check)
        check.between("endpoint_scale_in_cooldown_seconds", 0, 3600)
        check.between("endpoint_scale_out_cooldown_seconds", 0, 3600)
        group = self.names.model_package_group
        pattern = rf"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{{12}}:model-package/{re.escape(group)}/[1-9]\d*$"
        if self.endpoint_model_package_arn and not re.match(pattern, self.endpoint_model_package_arn):
            check.problems.append(
                f"endpoint_model_package_arn={_show(self.endpoint_model_package_arn)}: accepted is empty (serve the "
                f"latest approved version) or the ARN of a version of the group {group}, such as "
                f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{group}/3 (dogbreeds models lists them)."
            )
        check.between("endpoint_latency_alarm_ms", 1, 60_000)
        check.between("top_k", 1, DOG_BREEDS)
        check.between("endpoint_max_decode_mb", 64, 8192)
        check.between("endpoint_max_jpeg_scans", 10, 1000)
        self._check_inference_precision(check)

    def _check_inference_precision(self, check: _Checker) -> None:
        """One of inference.py's precisions, and one the endpoint's instance type can compute in."""
        precisions = _TRAIN.INFERENCE_PRECISIONS
        if self.inference_precision not in precisions:
            check.fail("inference_precision", "one of " + ", ".join(precisions))
            return
        try:
            gpu = is_gpu(self.endpoint_instance_type)
        except ValueError:
            return  # not an instance type: said by the instance type check
        # int8 needs a CPU (PyTorch's x86 int8 backend runs on CPUs only), fp16 a GPU.
        if self.inference_precision == ("int8" if gpu else "fp16"):
            needs = "a CPU type (PyTorch's x86 int8 backend runs on CPUs only)" if gpu else "an NVIDIA GPU type"
            kind = "an NVIDIA GPU type" if gpu else "a CPU type"
            accepted = [p for p in precisions if p != self.inference_precision]
            check.problems.append(
                f"inference_precision={_show(self.inference_precision)} needs {needs}, and "
                f"endpoint_instance_type={_show(self.endpoint_instance_type)} is {kind}: accepted with it are "
                f"{', '.join(accepted[:-1])} and {accepted[-1]}; or choose another endpoint_instance_type."
            )

    def _check_endpoint_instance_type(self, check: _Checker) -> None:
        """A type the botocore enum accepts may still have no PyTorch inference image (Graviton, Inferentia)."""
        if self.endpoint_instance_type not in instance_types("endpoint_instance_type"):
            return  # said by the enum check
        problem = serving_problem(self.endpoint_instance_type)
        if problem:
            check.problems.append(
                f"endpoint_instance_type={_show(self.endpoint_instance_type)}: {problem}. Accepted is an NVIDIA GPU "
                "type (ml.g4dn.xlarge, ml.g5.xlarge, ...) or an x86 CPU type (ml.c7i.xlarge, ml.m7i.xlarge, "
                "ml.c6i.xlarge, ...)."
            )

    def _lambda_problems(self, check: _Checker) -> None:
        check.between("lambda_memory_mb", 128, 10240)
        check.between("lambda_timeout_seconds", 1, 900)
        check.at_least("lambda_reserved_concurrency", 1)
        check.at_least("lambda_provisioned_concurrency", 0)
        if self.lambda_provisioned_concurrency > self.lambda_reserved_concurrency:
            check.problems.append(
                f"lambda_provisioned_concurrency={self.lambda_provisioned_concurrency} must not exceed "
                f"lambda_reserved_concurrency={self.lambda_reserved_concurrency}."
            )
        if self.lambda_provisioned_autoscaling:
            self._provisioned_autoscaling_problems(check)
        check.open_interval("lambda_provisioned_utilization_target", 0.0, 1.0)
        check.between("lambda_max_image_mb", 1, 4)
        check.between("lambda_fetch_timeout_seconds", 1, 60)
        check.between("lambda_endpoint_timeout_seconds", 1, 60)
        check.between("lambda_endpoint_max_attempts", 1, 5)
        if self.lambda_fetch_timeout_seconds >= self.lambda_timeout_seconds:
            check.problems.append(
                f"lambda_fetch_timeout_seconds={self.lambda_fetch_timeout_seconds} must be below "
                f"lambda_timeout_seconds={self.lambda_timeout_seconds}, or the Lambda times out before the fetch."
            )
        elif self.lambda_worst_case_seconds > self.lambda_timeout_seconds:
            check.problems.append(
                f"lambda_fetch_timeout_seconds={self.lambda_fetch_timeout_seconds} plus "
                f"lambda_endpoint_max_attempts={self.lambda_endpoint_max_attempts} calls of "
                f"lambda_endpoint_timeout_seconds={self.lambda_endpoint_timeout_seconds} and their retry back-off "
                f"take up to {self.lambda_worst_case_seconds} s, more than lambda_timeout_seconds="
                f"{self.lambda_timeout_seconds}: lower one of them or raise lambda_timeout_seconds, so that the "
                "Lambda answers 504 itself instead of timing out."
            )

    def _api_problems(self, check: _Checker) -> None:
        check.one_of("api_auth", API_AUTH)
        if self.api_throttle_rate_limit != 0:
            check.between("api_throttle_rate_limit", 1, API_ACCOUNT_RATE_LIMIT)
        if self.api_throttle_burst_limit != 0:
            check.between("api_throttle_burst_limit", 1, API_ACCOUNT_BURST_LIMIT)
        if self.api_burst_limit > self.lambda_reserved_concurrency:
            check.problems.append(
                f"api_throttle_burst_limit={self.api_throttle_burst_limit} admits {self.api_burst_limit} requests at "
                f"once, more than lambda_reserved_concurrency={self.lambda_reserved_concurrency}: the rest would meet "
                "the Lambda's throttle instead of the API's 429. Lower the burst, raise the reserved concurrency, or "
                "set api_throttle_burst_limit=0 (the reserved concurrency)."
            )
        check.between("api_integration_timeout_seconds", 1, MAX_INTEGRATION_TIMEOUT_SECONDS)
        one_call = self.lambda_fetch_timeout_seconds + self.lambda_endpoint_timeout_seconds + 1
        fetch_fits_the_lambda = self.lambda_fetch_timeout_seconds < self.lambda_timeout_seconds  # else said above
        if fetch_fits_the_lambda and 1 <= self.api_integration_timeout_seconds < one_call:
            check.problems.append(
                f"api_integration_timeout_seconds={self.api_integration_timeout_seconds} must be at least "
                f"lambda_fetch_timeout_seconds={self.lambda_fetch_timeout_seconds} plus "
                f"lambda_endpoint_timeout_seconds={self.lambda_endpoint_timeout_seconds} plus 1 s to answer "
                f"({one_call} s): one fetch and one endpoint call must fit before API Gateway gives up."
            )
        check.between("api_waf_rate_limit", *WAF_RATE_LIMIT_RANGE)
        if self.api_auth == "cognito":
            reserved = [word for word in COGNITO_RESERVED_WORDS if word in self.project_name]
            if reserved:
                check.problems.append(
                    f"project_name={_show(self.project_name)} contains {reserved[0]!r}, which a Cognito domain "
                    "prefix may not contain; api_auth=cognito names the user pool's domain after the project: "
                    "choose another project_name or another api_auth (iam, api_key)."
                )

    def _provisioned_autoscaling_problems(self, check: _Checker) -> None:
        if self.lambda_provisioned_concurrency < 1:
            check.problems.append(
                "lambda_provisioned_concurrency=0 must be at least 1 when lambda_provisioned_autoscaling=true "
                "(it is the autoscaling minimum)."
            )
        if not self.lambda_provisioned_concurrency <= self.lambda_provisioned_max <= self.lambda_reserved_concurrency:
            check.problems.append(
                f"lambda_provisioned_max={self.lambda_provisioned_max} must lie between "
                f"lambda_provisioned_concurrency={self.lambda_provisioned_concurrency} and "
                f"lambda_reserved_concurrency={self.lambda_reserved_concurrency}."
            )

    def _check_torch_not_newer_than_serving(self, check: _Checker) -> None:
        """A model saved by a newer torch is not guaranteed to load under the endpoint's older torch."""
        serving = torch_minor(self.inference_framework_version)
        if serving is None:
            check.fail("inference_framework_version", "a PyTorch version such as 2.6.0")
            return
        serving_text = f"{serving[0]}.{serving[1]}"
        inference = f"inference_framework_version={_show(self.inference_framework_version)}"
        writer = torch_minor(self.training_framework_version)
        if writer is None:
            check.fail("training_framework_version", "a PyTorch version such as 2.6.0")
        elif writer > serving:
            check.problems.append(
                f"training_framework_version={_show(self.training_framework_version)} must not be newer than "
                f"{inference} (major.minor): a model saved by torch {writer[0]}.{writer[1]} may not load under the "
                f"endpoint's torch {serving_text}. Accepted is a training container version of {serving_text} or older."
            )
        ami_torch = dlami_torch_minor(self.ec2_training_ami_parameter)
        if ami_torch is not None and ami_torch > serving:
            check.problems.append(
                f"ec2_training_ami_parameter={_show(self.ec2_training_ami_parameter)} names PyTorch "
                f"{ami_torch[0]}.{ami_torch[1]}, which must not be newer than {inference} (major.minor): a model "
                f"saved by torch {ami_torch[0]}.{ami_torch[1]} may not load under the endpoint's torch "
                f"{serving_text}. Accepted is the parameter of a PyTorch {serving_text} or older Deep Learning AMI, "
                f"such as {_show(with_dlami_torch(self.ec2_training_ami_parameter, serving))}."
            )

    # --- derived values stacks use -------------------------------------------------------------

    @property
    def names(self) -> Names:
        return Names(project=self.project_name, endpoint=self.endpoint_name)

    def stack_name(self, part: str) -> str:
        return self.names.stack(part)

    @property
    def endpoint_scaling_target(self) -> int:
        """Invocations per minute per instance that autoscaling tracks: the setting, or derived from the type (0)."""
        return self.endpoint_target_invocations_per_instance or derived_invocations_per_minute(
            self.endpoint_instance_type
        )

    @property
    def api_rate_limit(self) -> int:
        """The API's steady requests per second: the setting, or derived from the endpoint's capacity (0)."""
        if self.api_throttle_rate_limit:
            return self.api_throttle_rate_limit
        per_second = self.endpoint_max_capacity * self.endpoint_scaling_target / 60
        return max(1, math.ceil(round(per_second * API_CAPACITY_HEADROOM, 6)))

    @property
    def api_burst_limit(self) -> int:
        """The API's burst: the setting, or the Lambda's reserved concurrency (0)."""
        return self.api_throttle_burst_limit or self.lambda_reserved_concurrency

    @property
    def lambda_worst_case_seconds(self) -> int:
        """The longest one Lambda call can take: the fetch's deadline, every endpoint call taking its whole read
        timeout, and the back-off between calls (at most 2^(n-1) seconds before call n+1). A read timeout is never
        retried, but a throttled or unavailable answer that comes just before it is."""
        backoff = sum(min(20, 2 ** (attempt - 1)) for attempt in range(1, self.lambda_endpoint_max_attempts))
        return (
            self.lambda_fetch_timeout_seconds
            + self.lambda_endpoint_max_attempts * self.lambda_endpoint_timeout_seconds
            + backoff
        )


class _Checker:
    """Small helpers that append one sentence per problem."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.problems: list[str] = []

    def _value(self, key: str):
        return getattr(self.s, key)

    def fail(self, key: str, accepted: str) -> None:
        self.problems.append(f"{key}={_show(self._value(key))}: accepted is {accepted}.")

    def pattern(self, key: str, regex: re.Pattern[str], accepted: str) -> None:
        if not regex.match(self._value(key)):
            self.fail(key, accepted)

    def one_of(self, key: str, allowed: tuple) -> None:
        if self._value(key) not in allowed:
            self.fail(key, "one of " + ", ".join(str(a) for a in allowed))

    def at_least(self, key: str, low: int) -> None:
        if self._value(key) < low:
            self.fail(key, f"a whole number of at least {low}")

    def between(self, key: str, low: int, high: int) -> None:
        if not low <= self._value(key) <= high:
            self.fail(key, f"a whole number from {low} to {high}")

    def open_interval(self, key: str, low: float, high: float) -> None:
        if not low < self._value(key) < high:
            self.fail(key, f"a number above {low} and below {high}")

    def closed_interval(self, key: str, low: float, high: float) -> None:
        if not low <= self._value(key) <= high:
            self.fail(key, f"a number from {low} to {high}")

    def hyperparameter(self, key: str, name: str) -> None:
        """The value train.py accepts for its hyperparameter ``name`` (training/hyperparameters.py)."""
        kind = training_hyperparameters().HYPERPARAMETERS[name].kind
        if not kind.accepts(self._value(key)):
            self.fail(key, kind.accepted)

    def cidr(self, key: str) -> None:
        try:
            net = ipaddress.IPv4Network(self._value(key), strict=True)
        except ValueError:
            self.fail(key, "an IPv4 network in CIDR notation, such as 10.42.0.0/16")
            return
        if not 16 <= net.prefixlen <= 22 or not net.is_private:
            self.fail(key, "a private IPv4 network from /16 to /22, such as 10.42.0.0/16")

    def instance_type(self, key: str) -> None:
        value = self._value(key)
        accepted = instance_types(key)
        if value in accepted:
            return
        member = INSTANCE_TYPE_MEMBERS[key]
        example = member.example if member.example in accepted else accepted[0]
        close = difflib.get_close_matches(value.strip().lower(), accepted, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        self.problems.append(
            f"{key}={_show(value)}: accepted is {member.kind} such as {example} "
            f"(botocore {_botocore_version()}'s list has {len(accepted)}).{hint}"
        )


# --- parsing ---------------------------------------------------------------------------------------


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, object]:
    """cdk.json's whole context: the settings' defaults and CDK's feature flags."""
    return json.loads(path.read_text())["context"]


def defaults(path: Path = CDK_JSON) -> dict[str, object]:
    """The defaults: the settings keys of cdk.json's context."""
    return {k: v for k, v in cdk_json_context(path).items() if _is_settings_key(k)}


def _is_settings_key(key: str) -> bool:
    # CDK's own context keys (feature flags, aws:cdk:*, acknowledged-issue-numbers) all contain
    # '@', ':' or '-'; the settings are plain snake_case.
    return re.fullmatch(r"[a-z][a-z0-9_]*", key) is not None


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, Settings.keys(), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return f"{key} is not a setting.{hint} The settings are listed in the README and in cdk.json."


def _show(value: object) -> str:
    """A value as the user would type it: strings quoted, booleans lowercase."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | list):
        return json.dumps(value)
    return str(value)


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _parse(kind: object, value: object) -> object:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("accepted is true or false.")
    if kind is int:
        if isinstance(value, bool):
            raise ValueError("accepted is a whole number.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        raise ValueError("accepted is a whole number.")
    if kind is float:
        if isinstance(value, bool):
            raise ValueError("accepted is a number.")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError("accepted is a number.")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError("accepted is a string.")
    if typing.get_origin(kind) is tuple:
        items: object = value
        if isinstance(value, str):
            text = value.strip()
            items = json.loads(text) if text.startswith("[") else [s for s in text.split(",") if s.strip()]
        if not isinstance(items, list | tuple):
            raise ValueError("accepted is a list, as JSON or comma-separated, for example 32,64,128.")
        (item_kind, _) = typing.get_args(kind)
        try:
            return tuple(_parse(item_kind, i) for i in items)
        except ValueError:
            raise ValueError(
                "accepted is a list of whole numbers, as JSON or comma-separated, for example 32,64,128."
            ) from None
    raise TypeError(f"no parser for {kind!r}")


def markdown_table() -> str:
    """The README's settings table: key, default (as JSON, as in cdk.json) and description."""
    rows = ["| setting | default | what it sets |", "| --- | --- | --- |"]
    values = defaults()
    for key, doc in Settings.docs().items():
        rows.append(f"| `{key}` | `{json.dumps(values[key])}` | {doc} |")
    return "\n".join(rows)


README = CDK_JSON.parent / "README.md"
_TABLE_MARKER = "<!-- settings table: generated by `python -m dogbreeds_stacks.settings --write-readme` -->"


def write_readme_table(readme: Path = README) -> None:
    """Replace the table after the marker in the README with the current one."""
    text = readme.read_text()
    start = text.index(_TABLE_MARKER) + len(_TABLE_MARKER) + 1
    end = text.index("\n\n", start)
    readme.write_text(text[:start] + markdown_table() + text[end:])


if __name__ == "__main__":
    import sys

    if "--write-readme" in sys.argv[1:]:
        write_readme_table()
    else:
        print(markdown_table())
