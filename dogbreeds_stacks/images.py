"""PyTorch Deep Learning Container images, resolved from the SageMaker SDK's own tables.

The account that hosts the images differs by region, so an environment-agnostic stack carries a
region -> account mapping built from ``sagemaker.core.image_uris`` and picks its row with
``AWS::Region`` at deploy time. Nothing here hard-codes an account ID.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws, CfnMapping, Fn, Stack

from dogbreeds_stacks.instances import is_gpu
from dogbreeds_stacks.versions import pytorch_config


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
    entry = pytorch_config()[scope]["versions"][version]
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
