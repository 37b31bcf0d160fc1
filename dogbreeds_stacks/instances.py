"""Facts about instance types that the stacks decide from the type's name alone."""

from __future__ import annotations

import re

_TYPE = re.compile(r"^(?:ml\.)?(?P<family>[a-z][a-z0-9-]*)\.(?P<size>[a-z0-9]+)$")

# Instance types with NVMe instance storage. SageMaker mounts that storage instead of an EBS volume
# and rejects a KMS key for it (VolumeKmsKeyId on training jobs, KmsKeyId on endpoint configs).
# The "d" attribute after the generation marks it in most names (m5d, c5d, r6id, g4dn, p3dn, p4d,
# p4de); a few newer GPU families have it without the letter (EC2's "Instance store volumes" table).
# One pattern, in the syntax Python and JavaScript (JSONata in the state machine) share, so a type
# given at run time is judged by the same rule as one given in the settings.
LOCAL_STORAGE_PATTERN = (
    r"^(?:ml\.)?(?:[a-z]+[0-9]+[a-z]*d[a-z]*|g5|g6|g6e|gr6|g7e|p5|p5e|p5en|p6-b200|trn1|trn1n|trn2|x1|x1e)\."
)
# NVIDIA GPU families SageMaker offers (the DLC's -gpu images run on these).
_GPU_FAMILY = re.compile(r"^(p[2-6]|g4dn|g5|g6|g6e|gr6|g7e)")


def family(instance_type: str) -> str:
    """``ml.g4dn.xlarge`` -> ``g4dn``; ``m5d.large`` -> ``m5d``."""
    match = _TYPE.match(instance_type)
    if not match:
        raise ValueError(f"not an instance type: {instance_type!r}")
    return match.group("family")


def has_local_storage(instance_type: str) -> bool:
    """True when the type has NVMe instance storage, so a volume KMS key must not be given."""
    family(instance_type)  # rejects what is not an instance type
    return re.match(LOCAL_STORAGE_PATTERN, instance_type) is not None


def is_gpu(instance_type: str) -> bool:
    """True for NVIDIA GPU instance families (the DLC's -gpu images)."""
    return bool(_GPU_FAMILY.match(family(instance_type)))
