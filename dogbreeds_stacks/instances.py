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
# NVIDIA GPU families SageMaker offers (the DLC's -gpu images run on these). g7 (RTX PRO 4500 Blackwell) and g7e
# (RTX PRO 6000 Blackwell) are both NVIDIA.
_GPU_FAMILY = re.compile(r"^(p[2-6]|g4dn|g5|g6|g6e|gr6|g7|g7e)")
# Families the PyTorch inference container (x86_64: its CPU build, or its GPU build on NVIDIA) cannot serve on:
# Graviton (arm64; a "g" after the generation: c6g, c7g, m6gd, r8g), Inferentia and Trainium (Neuron images),
# Gaudi (dl1, Habana images) and Grace Blackwell (p6e-gb200: arm64 hosts).
_NOT_SERVABLE_FAMILY = re.compile(r"^(?:[a-z]+[0-9]+g[a-z]*|inf[0-9]+|trn[0-9]+[a-z]*|dl[0-9]+|p6e-gb[0-9]+)$")
# vCPUs by size: large 2, xlarge 4, Nxlarge 4N, medium 1 (Graviton's); these types are the exceptions.
_VCPU_EXCEPTIONS = {"t2.medium": 2, "t3.medium": 2, "c4.8xlarge": 36}
_SIZE = re.compile(r"^(?:(?P<n>[0-9]+)?xlarge|large|medium)$")

# The CPU serving path: each model-server worker runs its forward pass on this many OpenMP threads, and an instance
# runs vCPUs / this many workers, so workers x threads never exceeds the vCPUs. 2 threads is how docs/benchmarks.md
# measured a request (torch with 2 intra-op threads on 2 vCPUs); without these settings the toolkit starts one
# worker per vCPU, each torch using every core, and threads contending for 2 cores slowed a forward pass 7x.
CPU_THREADS_PER_WORKER = 2
# vCPU time of one whole batch-1 request in fp32 (decode, preprocess, forward, answer), in seconds: 2 threads x
# 71.8 ms, the p50 of a 1600x1200 JPEG through inference.py in docs/benchmarks.md's summary (a 2-core Sapphire
# Rapids guest, fp32 GEMM 323 GFLOP/s, torch 2.14.1, 2026-12-02), rounded up. An upper bound: decode and preprocess
# use one thread. bf16 (49.9 ms there) and int8 (20.2 ms) need less, so the derived target is conservative for
# them: load-test and set endpoint_target_invocations_per_instance to serve more per instance.
CPU_SECONDS_PER_REQUEST = 0.144
# SageMaker's load-testing guide sets a target-tracking target at an instance's peak x a safety factor, starting
# at 0.5: an instance at its target has about half its vCPU time spare for bursts until the fleet scales out.
SCALING_SAFETY_FACTOR = 0.5
# The target on GPU types, unchanged from the app's first default (cdk.json had 70): not derived from a
# measurement, as docs/benchmarks.md has no GPU figures yet.
GPU_INVOCATIONS_PER_MINUTE = 70


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


def serving_problem(instance_type: str) -> str | None:
    """Why the PyTorch inference container cannot serve on ``instance_type``; None when it can."""
    name = family(instance_type)
    if not _NOT_SERVABLE_FAMILY.match(name):
        return None
    return (
        f"the {name} family needs another serving image than the PyTorch inference container's x86_64 CPU and "
        "NVIDIA GPU builds (Graviton and Grace are arm64; Inferentia, Trainium and Gaudi need their own SDKs)"
    )


def vcpus(instance_type: str) -> int:
    """The vCPUs of an instance type, from its size: ``ml.c7i.large`` 2, ``ml.c7i.xlarge`` 4, ``ml.c7i.8xlarge`` 32."""
    bare = instance_type.removeprefix("ml.")
    family(instance_type)  # rejects what is not an instance type
    if bare in _VCPU_EXCEPTIONS:
        return _VCPU_EXCEPTIONS[bare]
    size = bare.rsplit(".", 1)[1]
    match = _SIZE.match(size)
    if not match:
        raise ValueError(f"no vCPU count is known for the size {size!r} of {instance_type}")
    if size == "medium":
        return 1
    if size == "large":
        return 2
    return 4 * int(match.group("n") or 1)


def cpu_serving_threads(instance_type: str) -> tuple[int, int]:
    """(model-server workers, OpenMP threads per worker) on a CPU type: workers x threads <= its vCPUs."""
    cores = vcpus(instance_type)
    threads = min(CPU_THREADS_PER_WORKER, cores)
    return max(1, cores // threads), threads


def serving_environment(instance_type: str) -> dict[str, str]:
    """What the serving container needs to use ``instance_type``'s CPUs without oversubscribing them.

    SAGEMAKER_MODEL_SERVER_WORKERS is the inference toolkit's ``default_workers_per_model`` of TorchServe (one per
    vCPU when unset); TorchServe's workers inherit the container's environment, and torch sizes its intra-op thread
    pool from OMP_NUM_THREADS. GPU types keep the defaults: one worker per GPU.
    """
    if is_gpu(instance_type):
        return {}
    workers, threads = cpu_serving_threads(instance_type)
    return {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers), "OMP_NUM_THREADS": str(threads)}


def derived_invocations_per_minute(instance_type: str) -> int:
    """The target-tracking target for ``instance_type``: the GPU figure, or from a CPU type's vCPUs."""
    if is_gpu(instance_type):
        return GPU_INVOCATIONS_PER_MINUTE
    peak_per_minute = vcpus(instance_type) / CPU_SECONDS_PER_REQUEST * 60
    return max(1, int(peak_per_minute * SCALING_SAFETY_FACTOR))
