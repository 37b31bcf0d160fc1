"""PyTorch Deep Learning Container images, resolved from the SageMaker SDK's own tables.

The account that hosts the images differs by region, so an environment-agnostic stack carries a
region -> account mapping built from ``sagemaker.core.image_uris`` and picks its row with
``AWS::Region`` at deploy time. Nothing here hard-codes an account ID.

The PyTorch (major, minor) of a container version or of a Deep Learning AMI's SSM parameter is read
here too: the settings refuse a training side newer than the serving side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from aws_cdk import Aws, CfnMapping, Fn, Stack

from stacks.instances import is_gpu


@cache
def _pytorch_config() -> dict:
    from sagemaker.core.image_uris import config_for_framework

    return config_for_framework("pytorch")


def framework_versions(scope: str) -> tuple[str, ...]:
    """The container versions sagemaker-core knows for ``scope`` ("training" or "inference")."""
    return tuple(_pytorch_config()[scope]["versions"])


def torch_minor(version: str) -> tuple[int, int]:
    """A PyTorch version's (major, minor): ``"2.6.0"`` -> ``(2, 6)``."""
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def newest_version(scope: str, at_most: tuple[int, int]) -> str | None:
    """The newest ``scope`` container version whose (major, minor) is at most ``at_most``; None if none is."""
    fitting = [v for v in framework_versions(scope) if torch_minor(v) <= at_most]
    return max(fitting, key=lambda v: tuple(int(part) for part in v.split(".")), default=None)


# The PyTorch version in a Deep Learning AMI's public SSM parameter, as in
# /aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.6-amazon-linux-2023/latest/ami-id.
_DLAMI_PYTORCH = re.compile(r"pytorch-(?P<major>\d+)\.(?P<minor>\d+)(?!\d)")


def dlami_torch_minor(parameter: str) -> tuple[int, int] | None:
    """The (major, minor) of the PyTorch a Deep Learning AMI's SSM parameter names; None if it names none."""
    match = _DLAMI_PYTORCH.search(parameter)
    return (int(match["major"]), int(match["minor"])) if match else None


def with_dlami_torch(parameter: str, version: tuple[int, int]) -> str:
    """``parameter`` naming PyTorch ``version`` instead (the same AMI family; whether it exists is AWS's)."""
    return _DLAMI_PYTORCH.sub(f"pytorch-{version[0]}.{version[1]}", parameter, count=1)


@dataclass(frozen=True)
class DlcImage:
    """One PyTorch DLC image: its repository, tag and the hosting account per region."""

    scope: str
    version: str
    repository: str
    tag: str
    registries: dict[str, str]

    def uri_in(self, stack: Stack) -> str:
        """The image URI as a CloudFormation expression that resolves for the stack's region."""
        mapping = _mapping(stack, self)
        account = mapping.find_in_map(Aws.REGION, "account")
        return Fn.join("", [account, ".dkr.ecr.", Aws.REGION, ".", Aws.URL_SUFFIX, f"/{self.repository}:{self.tag}"])

    def repository_arn_in(self, stack: Stack) -> str:
        """The ECR repository ARN, for a least-privilege image pull statement."""
        mapping = _mapping(stack, self)
        account = mapping.find_in_map(Aws.REGION, "account")
        return Fn.join("", ["arn:", Aws.PARTITION, ":ecr:", Aws.REGION, ":", account, f":repository/{self.repository}"])


def pytorch_image(scope: str, version: str, instance_type: str) -> DlcImage:
    """The PyTorch ``scope`` image of ``version`` for ``instance_type`` (gpu or cpu build)."""
    entry = _pytorch_config()[scope]["versions"][version]
    processor = "gpu" if is_gpu(instance_type) else "cpu"
    py_version = entry["py_versions"][-1]
    return DlcImage(
        scope=scope,
        version=version,
        repository=entry["repository"],
        tag=f"{version}-{processor}-{py_version}",
        registries=dict(sorted(entry["registries"].items())),
    )


def _mapping(stack: Stack, image: DlcImage) -> CfnMapping:
    mapping_id = f"PyTorch{image.scope.title()}Registry{image.version.replace('.', '')}"
    existing = stack.node.try_find_child(mapping_id)
    if existing is not None:
        return existing  # type: ignore[return-value]
    return CfnMapping(
        stack,
        mapping_id,
        mapping={region: {"account": account} for region, account in image.registries.items()},
    )
