"""The Model Registry as the operator CLI reads it: the group's versions, the version the endpoint serves, the
latest approved one, and what a deploy of the endpoint stack would serve.

Every name comes from the stacks' outputs: the group from the training stack's ``ModelPackageGroupName``,
the approved-package parameter from its ``ApprovedPackageParameterName``, the endpoint from the endpoint
stack. A version's ARN (``arn:<partition>:sagemaker:<region>:<account>:model-package/<group>/<N>``) is
always read from SageMaker (ListModelPackages, the endpoint's model), never built from its parts.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import ACCESS_DENIED_CODES, NotDeployedError, OpsError, UsageError, client_error_code
from dogbreeds_stacks.contract import NOT_APPROVED

APPROVED = "Approved"
PENDING = "PendingManualApproval"
REJECTED = "Rejected"

# ListModelPackages answers at most 100 versions a page (tests lower it to see the pages).
PAGE_SIZE = 100
# ApprovalDescription's longest value.
MAX_DESCRIPTION = 1024


def version_of(arn: str | None) -> int | None:
    """The version number that ends a versioned model package's ARN (None for anything else)."""
    head, _, tail = (arn or "").rpartition("/")
    return int(tail) if tail.isdigit() and ":model-package/" in head else None


def same_package(a: str | None, b: str | None) -> bool:
    """Two ARNs of the same package (compared without case: a model may name it as it was typed)."""
    return bool(a and b) and a.lower() == b.lower()


def parse_version(text: str) -> tuple[int, str | None]:
    """VERSION as given on the command line: a number, or a version's ARN (then also its group)."""
    if text.isdigit() and int(text) >= 1:
        return int(text), None
    number = version_of(text)
    if number is not None and text.startswith("arn:") and number >= 1:
        return number, text.rsplit("/", 2)[-2]
    raise UsageError(f"VERSION {text!r}: takes a version number such as 3 (dogbreeds models lists them) or its ARN")


def check_description(option: str, text: str | None, *, required: bool = False) -> str | None:
    """--note / --reason: the version's ApprovalDescription (at most 1024 characters)."""
    text = (text or "").strip()
    if required and not text:
        raise UsageError(f"{option} must say why, for example {option} 'misclassifies puppies'")
    if len(text) > MAX_DESCRIPTION:
        raise UsageError(f"{option}: at most {MAX_DESCRIPTION} characters (SageMaker's limit), not {len(text)}")
    return text or None


@dataclass(frozen=True)
class Version:
    """One version of the group, from ListModelPackages (and DescribeModelPackage for ``metadata``)."""

    number: int
    arn: str
    status: str  # ModelApprovalStatus
    created: datetime
    metadata: dict[str, str] = field(default_factory=dict)  # CustomerMetadataProperties
    approval_description: str | None = None

    @classmethod
    def from_summary(cls, summary: dict) -> Version:
        arn = summary["ModelPackageArn"]
        number = summary.get("ModelPackageVersion") or version_of(arn) or 0
        return cls(number, arn, summary.get("ModelApprovalStatus", PENDING), summary["CreationTime"])

    @property
    def test_accuracy(self) -> float | None:
        try:
            return float(self.metadata["test_accuracy"])
        except (KeyError, ValueError):
            return None

    @property
    def training_job(self) -> str | None:
        return self.metadata.get("training_job")

    @property
    def tuning_job(self) -> str | None:
        job = self.metadata.get("tuning_job")
        return None if job in (None, "none") else job


@dataclass(frozen=True)
class VariantModel:
    """What one production variant of an endpoint config runs."""

    variant: str
    model: str
    package_arn: str | None  # the model's PrimaryContainer.ModelPackageName
    model_data_url: str | None  # a model made without a package (deployed before the Model Registry)


@dataclass(frozen=True)
class Live:
    """The package the endpoint serves, or why it is not known."""

    endpoint: str | None
    package_arn: str | None = None
    unknown: str | None = None  # why package_arn is None: not deployed, no endpoint, not readable, ...
    denied: bool = False  # the credentials may not read it (the endpoint may serve anything)


@dataclass(frozen=True)
class Approved:
    """The approved-package parameter: its name and the ARN it holds (None: nothing approved yet)."""

    parameter: str
    package_arn: str | None = None
    unknown: str | None = None  # why it could not be read


def variant_models(sagemaker, endpoint_config: str) -> Iterator[VariantModel]:
    """DescribeEndpointConfig, then DescribeModel for each production variant's model."""
    described = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint_config)
    for variant in described["ProductionVariants"]:
        model = variant.get("ModelName")
        if not model:
            continue
        container = _container(sagemaker.describe_model(ModelName=model))
        package, data = container.get("ModelPackageName"), container.get("ModelDataUrl")
        yield VariantModel(variant["VariantName"], model, package, data)


def _container(model: dict) -> dict:
    return model.get("PrimaryContainer") or next(iter(model.get("Containers") or []), {})


def _denied(err: Exception) -> str | None:
    code = client_error_code(err)
    return f"not readable with these credentials ({code})" if code in ACCESS_DENIED_CODES else None


class Registry:
    """The project's model package group, its approved-package parameter and its endpoint, read on demand."""

    def __init__(self, stacks: Stacks, aws: Aws, config: Config) -> None:
        self.stacks = stacks
        self.aws = aws
        self.config = config

    @property
    def sagemaker(self):
        return self.aws.client("sagemaker")

    @cached_property
    def group(self) -> str:
        return self.stacks.output("training", "ModelPackageGroupName")

    # --- versions ------------------------------------------------------------------------------------

    def versions(self, limit: int | None = None) -> tuple[list[Version], bool]:
        """The group's versions, newest first, at most ``limit``; and whether more are left."""
        paginator = self.sagemaker.get_paginator("list_model_packages")
        pages = paginator.paginate(
            ModelPackageGroupName=self.group,
            ModelPackageType="Versioned",
            SortBy="CreationTime",
            SortOrder="Descending",
            PaginationConfig={"PageSize": PAGE_SIZE},
        )
        found: list[Version] = []
        for page in pages:
            for summary in page["ModelPackageSummaryList"]:
                if limit is not None and len(found) >= limit:
                    return found, True
                found.append(Version.from_summary(summary))
        return found, False

    def described(self, version: Version) -> Version:
        """The version with its CustomerMetadataProperties and ApprovalDescription (DescribeModelPackage)."""
        d = self.sagemaker.describe_model_package(ModelPackageName=version.arn)
        return Version(
            version.number,
            d["ModelPackageArn"],
            d.get("ModelApprovalStatus", version.status),
            d["CreationTime"],
            dict(d.get("CustomerMetadataProperties") or {}),
            d.get("ApprovalDescription"),
        )

    def find(self, number: int, versions: list[Version], group: str | None = None) -> Version:
        """The version numbered ``number``; OpsError (exit 1) naming the versions there are otherwise.

        ``group``: the group named in the ARN the operator gave, if any (UsageError unless it is this one).
        """
        if group is not None and group.lower() != self.group.lower():
            raise UsageError(f"That ARN names a version of the group {group}: this project's group is {self.group}")
        for version in versions:
            if version.number == number:
                return version
        if not versions:
            there = "has no versions yet (dogbreeds train registers one per trained model)"
        else:
            numbers = sorted(v.number for v in versions)
            there = f"has versions {_ranges(numbers)} (dogbreeds models lists them)"
        raise OpsError(f"There is no version {number} in the model package group {self.group}: it {there}.")

    # --- what is approved, served and deployable ------------------------------------------------------

    @property
    def approved_parameter(self) -> str:
        return self.stacks.output("training", "ApprovedPackageParameterName")

    @cached_property
    def approved(self) -> Approved:
        """The approved-package parameter, as the approval recorder last wrote it."""
        name = self.approved_parameter
        try:
            value = self.aws.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
        except Exception as err:
            reason = _denied(err)
            if reason is None and client_error_code(err) == "ParameterNotFound":
                reason = "the parameter does not exist"
            if reason is None:
                raise
            return Approved(name, unknown=reason)
        return Approved(name, None if value == NOT_APPROVED else value)

    @cached_property
    def live(self) -> Live:
        """The package the endpoint serves: endpoint -> endpoint config -> variant's model -> its package."""
        try:
            endpoint = self.stacks.output("endpoint", "EndpointName")
        except NotDeployedError:
            return Live(None, unknown=f"the stack {self.config.names.stack('endpoint')} is not deployed")
        try:
            described = self.sagemaker.describe_endpoint(EndpointName=endpoint)
        except Exception as err:
            if denied := _denied(err):
                return Live(endpoint, unknown=denied, denied=True)
            if client_error_code(err) == "ValidationException":
                return Live(endpoint, unknown=f"the endpoint {endpoint} does not exist")
            raise
        config = described.get("EndpointConfigName")
        try:
            models = list(variant_models(self.sagemaker, config)) if config else []
        except Exception as err:
            if (reason := _denied(err)) is None:
                raise
            return Live(endpoint, unknown=reason, denied=True)
        packages = [m.package_arn for m in models if m.package_arn]
        if packages:
            return Live(endpoint, packages[0])
        served = ", ".join(m.model_data_url or m.model for m in models) or "no model"
        return Live(endpoint, unknown=f"it serves {served}, not a model package version")

    def next_deploy(self, versions: list[Version]) -> tuple[str | None, str]:
        """The package a deploy of the endpoint stack would serve (None: it would be refused), and why.

        ``versions``: the group's versions, newest first, as they are now. The approval recorder
        (dogbreeds_stacks/approval.py) records the newest Approved version by creation time;
        endpoint_model_package_arn, when set, pins the endpoint to one version whatever is approved.
        """
        pinned = self.config.settings.endpoint_model_package_arn
        if pinned:
            return pinned, "pinned by the setting endpoint_model_package_arn"
        approved = [v for v in versions if v.status == APPROVED]
        return (approved[0].arn, "the latest approved") if approved else (None, "no version is approved")

    def set_status(self, version: Version, status: str, description: str | None) -> None:
        """UpdateModelPackage: the version's approval status, and why (its ApprovalDescription)."""
        request = {"ModelPackageArn": version.arn, "ModelApprovalStatus": status}
        if description:
            request["ApprovalDescription"] = description
        self.sagemaker.update_model_package(**request)

    def recorder_note(self) -> str:
        return (
            f"the approval recorder ({self.config.names.approval_recorder}) updates the parameter "
            f"{self.approved_parameter} within seconds"
        )

    def deploy_command(self) -> str:
        return self.config.cdk_command("deploy", "endpoint")

    def pin_command(self, arn: str) -> str:
        """The deploy that serves ``arn`` whatever is approved."""
        return f"{self.deploy_command()} -c {shlex.quote(f'endpoint_model_package_arn={arn}')}"


def describe_version(arn: str | None, group: str | None = None) -> str:
    """'version 3' for a version of the group, else the ARN itself."""
    number = version_of(arn)
    if number is None or (group and f"/{group.lower()}/" not in (arn or "").lower()):
        return str(arn)
    return f"version {number}"


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)
