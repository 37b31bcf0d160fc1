"""``dogbreeds preflight``: are the account's service quotas enough for these settings? Run it first.

It compares the quotas in the region (AWS Service Quotas) with what the settings (cdk.json, with
-c overrides) need, and prints each shortfall with the `aws service-quotas
request-service-quota-increase` command and the console link. Increases can take days: ask early.

  training pipeline  tuning runs tuning_max_parallel_jobs trials at once (1 x tuning_instance_type
                     each, on demand), then the final job runs training_instance_count x
                     training_instance_type (spot with training_use_spot); one after the other, so a
                     quota both use needs the larger count, not the sum
  endpoint           2 x endpoint_max_capacity x endpoint_instance_type: a blue/green update keeps
                     the old fleet serving while a new one of the same size starts
  notebook           1 x notebook_instance_type
  Lambda             concurrent executions: lambda_reserved_concurrency + the 100 that Lambda keeps
                     unreserved for the account's other functions
  EC2 training       the vCPUs of ec2_training_instance_type, against its family's On-Demand quota

Read-only; the permissions it needs: servicequotas:ListServiceQuotas,
servicequotas:ListAWSDefaultServiceQuotas, servicequotas:GetServiceQuota, ec2:DescribeInstanceTypes.
Exit code 1 when a quota is short or not found (the type may not be offered in the region).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from dataclasses import dataclass, field

from dogbreeds.ops.aws import Aws
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import ACCESS_DENIED_CODES, AwsSetupError, OpsError, client_error_code
from dogbreeds_stacks.settings import Settings

PERMISSIONS = (
    "servicequotas:ListServiceQuotas",
    "servicequotas:ListAWSDefaultServiceQuotas",
    "servicequotas:GetServiceQuota",
    "ec2:DescribeInstanceTypes",
)

# Lambda keeps this many of the account's concurrent executions unreserved: "You can reserve up to the
# Unreserved account concurrency value that is shown, minus 100 for functions that don't have reserved
# concurrency" (Lambda Developer Guide, "Configuring reserved concurrency for a function").
LAMBDA_UNRESERVED_MINIMUM = 100
LAMBDA_CONCURRENCY = ("lambda", "L-B99A9384", "Concurrent executions")

# The endpoint stack's blue/green policy keeps the old fleet for this long after the new one serves.
BLUE_GREEN_WAIT_MINUTES = 10

# SageMaker quotas that are not per instance type, by their QuotaName in Service Quotas.
ALL_TRAINING_INSTANCES = "Number of instances across all training jobs"
ALL_SPOT_TRAINING_INSTANCES = "Number of instances across all spot training jobs"
INSTANCES_PER_TRAINING_JOB = "Maximum number of instances per training job"
INSTANCES_PER_SPOT_TRAINING_JOB = "Maximum number of instances per spot training job"
PARALLEL_TRIALS = "Maximum number of training jobs each hyper parameter tuning job can run in parallel at once"
TRIALS_PER_TUNING_JOB = "Maximum number of training jobs that each hyperparameter tuning job can create"
PARALLEL_TUNING_JOBS = "Maximum number of hyper parameter tuning jobs that can run at once in parallel"
ALL_ENDPOINT_INSTANCES = "Number of instances across active endpoints"

# EC2's On-Demand quotas count vCPUs per group of instance families; the first pattern that matches the
# family (the part of the type before the dot) names the quota.
EC2_ON_DEMAND_QUOTAS = (
    (re.compile(r"(gr?|vt)\d"), "Running On-Demand G and VT instances"),
    (re.compile(r"p\d"), "Running On-Demand P instances"),
    (re.compile(r"inf\d"), "Running On-Demand Inf instances"),
    (re.compile(r"trn\d"), "Running On-Demand Trn instances"),
    (re.compile(r"dl\d"), "Running On-Demand DL instances"),
    (re.compile(r"hpc\d"), "Running On-Demand HPC instances"),
    (re.compile(r"u(-|\d)"), "Running On-Demand High Memory instances"),
    (re.compile(r"f\d"), "Running On-Demand F instances"),
    (re.compile(r"x\d"), "Running On-Demand X instances"),
    (re.compile(r"([acdhmrtz]|i[ms]?)\d"), "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
)

OK, SHORT, NOT_FOUND = "OK", "SHORT", "NOT FOUND"


class QuotasShortError(OpsError):
    """Some quota is short or not found (exit code 1, EXIT_FAILED: the check ran and failed)."""


@dataclass(frozen=True)
class Need:
    """What one part of the system needs of one quota, and why."""

    requirement: str  # the part of the system, as the table shows it
    service: str  # the Service Quotas service code
    quota_name: str
    needed: int
    why: str
    settings: tuple[str, ...]  # the settings that decide it, named in the advice
    quota_code: str | None = None  # known and stable: read with GetServiceQuota
    unavailable: str | None = None  # why the quota cannot be looked up at all


@dataclass(frozen=True)
class Quota:
    code: str
    name: str
    value: float
    adjustable: bool
    applied: bool  # False: the account has no applied value, so AWS's default holds


@dataclass
class Check:
    need: Need
    quota: Quota | None
    status: str
    detail: str = ""
    fix: list[str] = field(default_factory=list)


# --- what the settings need ---------------------------------------------------------------------------


def training_needs(s: Settings) -> list[Need]:
    """The pipeline's tuning trials, then its final job: quotas both use need the larger of the two counts."""
    final = final_job_needs(s)
    return sequential(tuning_needs(s), final) if s.tuning_enabled else final


def final_job_needs(s: Settings) -> list[Need]:
    """training_instance_count x training_instance_type in one job, on demand or spot."""
    train_type = s.training_instance_type
    count = s.training_instance_count
    spot = s.training_use_spot
    train_keys = ("training_instance_type", "training_instance_count", "training_use_spot")
    kind = "spot training job" if spot else "training job"
    return [
        Need(
            f"final training job{' (spot)' if spot else ''}",
            "sagemaker",
            f"{train_type} for {kind} usage",
            count,
            f"the final job runs {count} x {train_type}{' as managed spot' if spot else ''}",
            train_keys,
        ),
        Need(
            f"final training job{' (spot)' if spot else ''}",
            "sagemaker",
            ALL_SPOT_TRAINING_INSTANCES if spot else ALL_TRAINING_INSTANCES,
            count,
            f"the final job runs {count} instance(s)",
            train_keys,
        ),
        Need(
            f"final training job{' (spot)' if spot else ''}",
            "sagemaker",
            INSTANCES_PER_SPOT_TRAINING_JOB if spot else INSTANCES_PER_TRAINING_JOB,
            count,
            f"one job with {count} instance(s)",
            ("training_instance_count",),
        ),
    ]


def tuning_needs(s: Settings) -> list[Need]:
    """tuning_max_parallel_jobs trials at once, each on 1 x tuning_instance_type, on demand."""
    tune_type = s.tuning_instance_type
    parallel = s.tuning_max_parallel_jobs
    max_jobs = s.tuning_max_jobs
    trials = min(parallel, max_jobs)
    tune_keys = ("tuning_instance_type", "tuning_max_parallel_jobs")
    return [
        Need(
            "tuning trials",
            "sagemaker",
            f"{tune_type} for training job usage",
            trials,
            f"tuning runs up to {trials} trials at once, each on 1 x {tune_type}, on demand",
            tune_keys,
        ),
        Need(
            "tuning trials",
            "sagemaker",
            ALL_TRAINING_INSTANCES,
            trials,
            f"tuning runs {trials} trial instance(s) at once",
            tune_keys,
        ),
        Need(
            "tuning job",
            "sagemaker",
            PARALLEL_TRIALS,
            parallel,
            f"the tuning job asks for MaxParallelTrainingJobs={parallel}",
            ("tuning_max_parallel_jobs",),
        ),
        Need(
            "tuning job",
            "sagemaker",
            TRIALS_PER_TUNING_JOB,
            max_jobs,
            f"the tuning job (Bayesian strategy) asks for MaxNumberOfTrainingJobs={max_jobs}",
            ("tuning_max_jobs",),
        ),
        Need(
            "tuning job",
            "sagemaker",
            PARALLEL_TUNING_JOBS,
            1,
            "one tuning job per pipeline execution",
            ("tuning_enabled",),
        ),
    ]


def sequential(first: list[Need], then: list[Need]) -> list[Need]:
    """Needs of two phases that never overlap: a quota both use needs the larger count, not the sum."""
    merged: list[Need] = []
    later = {n.quota_name: n for n in then}
    for need in first:
        other = later.pop(need.quota_name, None)
        if other is None:
            merged.append(need)
            continue
        larger = max(need.needed, other.needed)
        merged.append(
            Need(
                f"{need.requirement}, then {other.requirement}",
                need.service,
                need.quota_name,
                larger,
                f"{need.why}; then {other.why}. The pipeline runs them one after the other (the final job starts "
                f"when the tuning job has ended), so they share the quota and need the larger count, {larger}, "
                "not the sum",
                tuple(dict.fromkeys(need.settings + other.settings)),
            )
        )
    return merged + list(later.values())


def endpoint_needs(s: Settings) -> list[Need]:
    instance_type = s.endpoint_instance_type
    most = s.endpoint_max_capacity
    keys = ("endpoint_instance_type", "endpoint_max_capacity")
    why = (
        f"autoscaling runs up to {most} x {instance_type}; the endpoint stack updates blue/green: the new fleet "
        f"starts at the old fleet's size while the old one keeps serving until the rollback alarms have watched "
        f"the new one ({BLUE_GREEN_WAIT_MINUTES} minutes), so an update at full scale needs 2 x {most} = {2 * most}"
    )
    return [
        Need("endpoint, blue/green update", "sagemaker", f"{instance_type} for endpoint usage", 2 * most, why, keys),
        Need("endpoint, blue/green update", "sagemaker", ALL_ENDPOINT_INSTANCES, 2 * most, why, keys),
    ]


def notebook_needs(s: Settings) -> list[Need]:
    instance_type = s.notebook_instance_type
    return [
        Need(
            "notebook instance",
            "sagemaker",
            f"{instance_type} for notebook instance usage",
            1,
            f"the notebook stack runs 1 x {instance_type}",
            ("notebook_instance_type",),
        )
    ]


def lambda_needs(s: Settings) -> list[Need]:
    reserved = s.lambda_reserved_concurrency
    service, code, name = LAMBDA_CONCURRENCY
    return [
        Need(
            "Lambda reserved concurrency",
            service,
            name,
            reserved + LAMBDA_UNRESERVED_MINIMUM,
            f"the invoker reserves {reserved}, and Lambda keeps at least {LAMBDA_UNRESERVED_MINIMUM} of the account's "
            f"concurrency unreserved for functions without a reservation: {reserved} + {LAMBDA_UNRESERVED_MINIMUM} = "
            f"{reserved + LAMBDA_UNRESERVED_MINIMUM} (reservations of other functions in the account come on top)",
            ("lambda_reserved_concurrency",),
            quota_code=code,
        )
    ]


def ec2_needs(s: Settings, aws: Aws) -> list[Need]:
    instance_type = s.ec2_training_instance_type
    family = instance_type.split(".", 1)[0]
    quota_name = next((name for pattern, name in EC2_ON_DEMAND_QUOTAS if pattern.match(family)), None)
    keys = ("ec2_training_instance_type",)
    requirement = "EC2 training instance"
    if quota_name is None:
        return [
            Need(
                requirement,
                "ec2",
                f"Running On-Demand instances of family {family}",
                1,
                f"the EC2 training stack launches 1 x {instance_type}",
                keys,
                unavailable=f"no On-Demand vCPU quota is known for the instance family {family}",
            )
        ]
    try:
        answer = aws.client("ec2").describe_instance_types(InstanceTypes=[instance_type])
        vcpus = answer["InstanceTypes"][0]["VCpuInfo"]["DefaultVCpus"]
    except Exception as err:
        if client_error_code(err) not in {"InvalidInstanceType", "InvalidParameterValue"}:
            raise
        vcpus, unavailable = 0, f"EC2 does not offer {instance_type} in {aws.region}"
    else:
        unavailable = None
    return [
        Need(
            requirement,
            "ec2",
            quota_name,
            vcpus,
            f"the EC2 training stack launches 1 x {instance_type} on demand, and EC2 counts this quota in vCPUs: "
            f"{instance_type} has {vcpus}",
            keys,
            unavailable=unavailable,
        )
    ]


def pipeline_notes(s: Settings) -> list[str]:
    notes = [
        "Tuning and the final job never overlap within one pipeline execution, but nothing stops two executions "
        "at once (dogbreeds train twice): those add up.",
        "dogbreeds train --instance-type/--instance-count/--spot change one run's needs; this checks the settings.",
    ]
    if not s.tuning_enabled:
        notes.insert(0, "tuning_enabled=false: tuning's quotas are not checked.")
    return notes


# --- the quotas in the account -------------------------------------------------------------------------


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


class QuotaBook:
    """The account's quotas, listed once per service: the applied values, else AWS's defaults."""

    def __init__(self, client) -> None:
        self.client = client
        self._listed: dict[tuple[str, str], dict[str, dict]] = {}

    def _list(self, operation: str, service: str) -> dict[str, dict]:
        """QuotaName (normalized) -> the ServiceQuota entry, every page; empty when AWS has none."""
        if (operation, service) not in self._listed:
            found: dict[str, dict] = {}
            try:
                pages = self.client.get_paginator(operation).paginate(
                    ServiceCode=service, PaginationConfig={"PageSize": 100}
                )
                for page in pages:
                    for entry in page.get("Quotas", []):
                        if "Value" in entry:
                            found.setdefault(_key(entry["QuotaName"]), entry)
            except Exception as err:
                if client_error_code(err) != "NoSuchResourceException":
                    raise
            self._listed[(operation, service)] = found
        return self._listed[(operation, service)]

    def by_name(self, service: str, name: str) -> Quota | None:
        entry = self._list("list_service_quotas", service).get(_key(name))
        if entry is not None:
            return _quota(entry, applied=True)
        entry = self._list("list_aws_default_service_quotas", service).get(_key(name))
        return None if entry is None else _quota(entry, applied=False)

    def by_code(self, service: str, code: str) -> Quota | None:
        try:
            return _quota(self.client.get_service_quota(ServiceCode=service, QuotaCode=code)["Quota"], applied=True)
        except Exception as err:
            if client_error_code(err) != "NoSuchResourceException":
                raise
        # No applied value in the account: AWS's default holds.
        defaults = self._list("list_aws_default_service_quotas", service).values()
        entry = next((e for e in defaults if e["QuotaCode"] == code), None)
        return None if entry is None else _quota(entry, applied=False)


def _quota(entry: dict, *, applied: bool) -> Quota:
    return Quota(
        code=entry["QuotaCode"],
        name=entry["QuotaName"],
        value=float(entry["Value"]),
        adjustable=bool(entry.get("Adjustable", False)),
        applied=applied,
    )


# --- comparing --------------------------------------------------------------------------------------


def check(need: Need, book: QuotaBook, region: str, profile: str | None) -> Check:
    if need.unavailable:
        return Check(need, None, NOT_FOUND, f"{need.unavailable}: choose another type ({', '.join(need.settings)})")
    quota = (
        book.by_code(need.service, need.quota_code) if need.quota_code else book.by_name(need.service, need.quota_name)
    )
    if quota is None:
        return Check(
            need,
            None,
            NOT_FOUND,
            f"Service Quotas has no quota {need.quota_name!r} for {need.service} in {region}: the type may not be "
            f"offered in this region; choose another region or change {', '.join(need.settings)}",
        )
    if quota.value >= need.needed:
        return Check(need, quota, OK)
    detail = f"{need.needed} needed, {_number(quota.value)} available"
    if need.quota_code == LAMBDA_CONCURRENCY[1]:
        detail += lambda_detail(need, quota)
    if not quota.adjustable:
        return Check(need, quota, SHORT, f"{detail}; not adjustable: change {', '.join(need.settings)}")
    return Check(
        need,
        quota,
        SHORT,
        detail,
        fix=[request_command(need, quota, region, profile), console_url(quota, need.service, region)],
    )


def lambda_detail(need: Need, quota: Quota) -> str:
    reserved = need.needed - LAMBDA_UNRESERVED_MINIMUM
    left = quota.value - reserved
    if left <= 0:
        return (
            f". Reserving {reserved} is impossible with {_number(quota.value)} concurrent executions: it would leave "
            f"{_number(left)} unreserved, below the documented minimum of {LAMBDA_UNRESERVED_MINIMUM}. New "
            "accounts often start at 10; AWS raises it with use, or on request"
        )
    return (
        f". Reserving {reserved} would leave {_number(left)} unreserved, below the documented minimum of "
        f"{LAMBDA_UNRESERVED_MINIMUM}"
    )


def request_command(need: Need, quota: Quota, region: str, profile: str | None) -> str:
    words = ["aws", "service-quotas", "request-service-quota-increase", "--service-code", need.service]
    words += ["--quota-code", quota.code, "--desired-value", str(need.needed), "--region", region]
    if profile:
        words += ["--profile", profile]
    return shlex.join(words)


def console_url(quota: Quota, service: str, region: str) -> str:
    return f"https://{region}.console.aws.amazon.com/servicequotas/home/services/{service}/quotas/{quota.code}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --- the command ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    s = config.settings
    needs = [*training_needs(s), *endpoint_needs(s), *notebook_needs(s), *lambda_needs(s)]
    profile = getattr(args, "profile", None)
    try:
        needs += ec2_needs(s, aws)
        book = QuotaBook(aws.client("service-quotas"))
        checks = [check(need, book, aws.region, profile) for need in needs]
    except Exception as err:
        if client_error_code(err) in ACCESS_DENIED_CODES:
            message = err.response.get("Error", {}).get("Message", "")
            raise AwsSetupError(
                f"Access denied to {getattr(err, 'operation_name', 'the call')} ({message}): preflight needs "
                f"{', '.join(PERMISSIONS)}."
            ) from None
        raise
    notes = pipeline_notes(s)
    if args.json:
        print(json.dumps(as_json(checks, notes, config, aws.region), indent=2))
    else:
        print(render(checks, notes, config, aws.region))
    failed = [c for c in checks if c.status != OK]
    if failed:
        raise QuotasShortError(
            f"{len(failed)} of {len(checks)} quotas in {aws.region} are short or not found: request the increases "
            "shown (approval can take days) or change the settings, then run dogbreeds preflight again."
        )
    return 0


def render(checks: list[Check], notes: list[str], config: Config, region: str) -> str:
    header = ("REQUIREMENT", "NEEDED", "AVAILABLE", "STATUS", "QUOTA (SERVICE CODE: NAME)")
    rows = [
        (
            c.need.requirement,
            "-" if c.need.unavailable else str(c.need.needed),
            "-" if c.quota is None else _number(c.quota.value) + ("" if c.quota.applied else " (default)"),
            c.status,
            f"{c.need.service}: {c.need.quota_name}",
        )
        for c in checks
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]), row[3].ljust(widths[3])]
        return "  " + "  ".join([*cells, row[4]])

    sources = "cdk.json" + (", -c " + " -c ".join(config.overrides) if config.overrides else "")
    out = [f"Service quotas in {region} for the settings of {config.settings.project_name} ({sources}):", ""]
    out += [line(header), *(line(row) for row in rows), "", "How each number is computed:"]
    reasons: dict[str, list[str]] = {}
    for c in checks:
        reasons.setdefault(c.need.why, []).append(c.need.quota_name)
    out += [f"  - {', '.join(names)}: {why}." for why, names in reasons.items()]
    failed = [c for c in checks if c.status != OK]
    if failed:
        out += ["", "To fix:"]
        for c in failed:
            out.append(f"  {c.need.quota_name} ({c.status}): {c.detail}.")
            out += [f"    {text}" for text in c.fix]
    out += ["", "Notes:", *(f"  - {note}" for note in notes)]
    if not failed:
        out += ["", f"All {len(checks)} quotas are enough for these settings."]
    return "\n".join(out)


def as_json(checks: list[Check], notes: list[str], config: Config, region: str) -> dict:
    return {
        "region": region,
        "project_name": config.settings.project_name,
        "ok": all(c.status == OK for c in checks),
        "checks": [
            {
                "requirement": c.need.requirement,
                "service_code": c.need.service,
                "quota_name": c.quota.name if c.quota else c.need.quota_name,
                "quota_code": c.quota.code if c.quota else None,
                "needed": None if c.need.unavailable else c.need.needed,
                "available": c.quota.value if c.quota else None,
                "source": None if c.quota is None else ("applied" if c.quota.applied else "aws_default"),
                "adjustable": c.quota.adjustable if c.quota else None,
                "status": c.status,
                "why": c.need.why,
                "detail": c.detail or None,
                "request_command": c.fix[0] if c.fix else None,
                "console_url": c.fix[1] if c.fix else None,
                "settings": list(c.need.settings),
            }
            for c in checks
        ],
        "notes": notes,
    }
