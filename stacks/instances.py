"""Facts about instance types that the stacks decide from the type's name alone."""

from __future__ import annotations

import re

_TYPE = re.compile(r"^(?:ml\.)?(?P<family>[a-z][a-z0-9-]*)\.(?P<size>[a-z0-9]+)$")

# Families whose instances carry NVMe instance storage although their name has no "d" attribute
# (EC2's "Instance store volumes" table). SageMaker mounts that storage instead of an EBS volume
# and rejects a KMS key for it (VolumeKmsKeyId on training jobs, KmsKeyId on endpoint configs).
_LOCAL_STORAGE_FAMILIES = frozenset(
    {"g5", "g6", "g6e", "gr6", "g7e", "p5", "p5e", "p5en", "p6-b200", "trn1", "trn1n", "trn2", "x1", "x1e"}
)
# NVIDIA GPU families SageMaker offers (the CUDA images run on these).
_GPU_FAMILY = re.compile(r"^(p[2-6]|g4dn|g5|g6|g6e|gr6|g7e)")


def family(instance_type: str) -> str:
    """``ml.g4dn.xlarge`` -> ``g4dn``; ``m5d.large`` -> ``m5d``."""
    match = _TYPE.match(instance_type)
    if not match:
        raise ValueError(f"not an instance type: {instance_type!r}")
    return match.group("family")


def has_local_storage(instance_type: str) -> bool:
    """True when the type has NVMe instance storage, so a volume KMS key must not be given.

    The "d" attribute after the generation (m5d, c5d, r6id, g4dn, p3dn, p4d, p4de) marks it in the
    name; a few newer GPU families have it without the letter.
    """
    fam = family(instance_type)
    if fam in _LOCAL_STORAGE_FAMILIES:
        return True
    match = re.match(r"^[a-z]+\d+(?P<attributes>[a-z]*)", fam)
    return bool(match and "d" in match.group("attributes"))


def is_gpu(instance_type: str) -> bool:
    """True for NVIDIA GPU instance families (the DLC's -gpu images)."""
    return bool(_GPU_FAMILY.match(family(instance_type)))
