"""PyTorch versions: the containers sagemaker-core knows, and the (major, minor) of a version or a Deep
Learning AMI parameter. CDK-free; sagemaker-core is imported only when its tables are asked for."""

from __future__ import annotations

import re
from functools import cache


@cache
def pytorch_config() -> dict:
    """sagemaker-core's PyTorch image table (its import takes seconds: only where an image is needed)."""
    from sagemaker.core.image_uris import config_for_framework

    return config_for_framework("pytorch")


def framework_versions(scope: str) -> tuple[str, ...]:
    """The container versions sagemaker-core knows for ``scope`` ("training" or "inference")."""
    return tuple(pytorch_config()[scope]["versions"])


def torch_minor(version: str) -> tuple[int, int] | None:
    """A PyTorch version's (major, minor): ``"2.6.0"`` -> ``(2, 6)``; None when it is not a version."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.\d+)*$", version)
    return (int(match[1]), int(match[2])) if match else None


def newest_version(scope: str, at_most: tuple[int, int]) -> str | None:
    """The newest ``scope`` container version whose (major, minor) is at most ``at_most``; None if none is."""
    fitting = [v for v in framework_versions(scope) if (torch_minor(v) or (0, 0)) <= at_most]
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
