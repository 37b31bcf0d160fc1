"""preflight: the settings' needs against Service Quotas and EC2 (botocore Stubber: AWS's own request and
response shapes), the merge of sequential pipeline phases, blue/green doubling, Lambda's unreserved 100."""

from __future__ import annotations

import json
import zlib

import pytest

from dogbreeds import cli
from dogbreeds.ops import preflight
from dogbreeds.ops.errors import EXIT_AWS, EXIT_FAILED, EXIT_USAGE
from tests.cfn_values import Deployment
from tests.dogbreeds.fakes import ACCOUNT, REGION

G4DN_TRAINING = "ml.g4dn.xlarge for training job usage"
G4DN_SPOT = "ml.g4dn.xlarge for spot training job usage"
G4DN_ENDPOINT = "ml.g4dn.xlarge for endpoint usage"
G5_TRAINING = "ml.g5.xlarge for training job usage"
T3_NOTEBOOK = "ml.t3.medium for notebook instance usage"
ALL_TRAINING = "Number of instances across all training jobs"
ALL_SPOT = "Number of instances across all spot training jobs"
PER_JOB = "Maximum number of instances per training job"
PER_SPOT_JOB = "Maximum number of instances per spot training job"
PARALLEL_TRIALS = "Maximum number of training jobs each hyper parameter tuning job can run in parallel at once"
TRIALS = "Maximum number of training jobs that each hyperparameter tuning job can create"
TUNING_JOBS = "Maximum number of hyper parameter tuning jobs that can run at once in parallel"
ALL_ENDPOINTS = "Number of instances across active endpoints"
G_AND_VT = "Running On-Demand G and VT instances"
STANDARD = "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"

# The quota codes Service Quotas gives these names (they differ per instance type, hence the match by name).
CODES = {
    G4DN_TRAINING: "L-3F53BF0F",
    G4DN_SPOT: "L-944F78BB",
    G4DN_ENDPOINT: "L-B67CFA0C",
    G5_TRAINING: "L-B6D80D9C",
    T3_NOTEBOOK: "L-E17566B7",
    ALL_TRAINING: "L-00C91CB5",
    ALL_SPOT: "L-93958082",
    PER_JOB: "L-622CFD70",
    PER_SPOT_JOB: "L-DB62C864",
    PARALLEL_TRIALS: "L-11294128",
    TRIALS: "L-EAC49F53",
    TUNING_JOBS: "L-9D782CC7",
    ALL_ENDPOINTS: "L-7A3DF611",
    G_AND_VT: "L-DB2E81BA",
    STANDARD: "L-1216C47A",
    "Concurrent executions": "L-B99A9384",
}

# Enough for cdk.json's defaults: 2 x ml.g4dn.xlarge training, 2 trials at once, endpoint up to 3.
ENOUGH = {
    G4DN_TRAINING: 4,
    ALL_TRAINING: 4,
    PER_JOB: 20,
    PARALLEL_TRIALS: 10,
    TRIALS: 750,
    TUNING_JOBS: 100,
    G4DN_ENDPOINT: 6,
    ALL_ENDPOINTS: 20,
    T3_NOTEBOOK: 2,
}
OTHER = {"Rate of CreateTrainingJob requests": 1, "ml.p4d.24xlarge for endpoint usage": 0}


def entry(service: str, name: str, value: float, *, adjustable: bool = True) -> dict:
    """A ServiceQuota as ListServiceQuotas, ListAWSDefaultServiceQuotas and GetServiceQuota answer it."""
    code = CODES.get(name, f"L-{zlib.crc32(name.encode()):08X}")
    return {
        "ServiceCode": service,
        "ServiceName": {"sagemaker": "Amazon SageMaker", "lambda": "AWS Lambda", "ec2": "Amazon EC2"}[service],
        "QuotaArn": f"arn:aws:servicequotas:{REGION}:{ACCOUNT}:{service}/{code}",
        "QuotaCode": code,
        "QuotaName": name,
        "Value": float(value),
        "Unit": "None",
        "Adjustable": adjustable,
        "GlobalQuota": False,
    }


class Account:
    """Stubbed Service Quotas and EC2 answers, added in the order the command asks."""

    def __init__(self, fake) -> None:
        self.quotas = fake.stub("service-quotas")
        self.ec2 = fake.stub("ec2")

    def listed(
        self, operation: str, service: str, values: dict[str, float], *, pages: int = 1, fixed: frozenset = frozenset()
    ) -> None:
        """Every page of the listing; quotas named in ``fixed`` are not adjustable."""
        entries = [entry(service, name, value, adjustable=name not in fixed) for name, value in values.items()]
        size = -(-len(entries) // pages) or 1
        for page in range(pages):
            expected = {"ServiceCode": service, "MaxResults": 100}
            if page:
                expected["NextToken"] = f"page-{page + 1}"
            answer = {"Quotas": entries[page * size : (page + 1) * size]}
            if page < pages - 1:
                answer["NextToken"] = f"page-{page + 2}"
            self.quotas.add_response(operation, answer, expected)

    def applied(self, service: str, values: dict[str, float], **options) -> None:
        self.listed("list_service_quotas", service, values, **options)

    def defaults(self, service: str, values: dict[str, float], **options) -> None:
        self.listed("list_aws_default_service_quotas", service, values, **options)

    def concurrency(self, value: float | None) -> None:
        """GetServiceQuota for Lambda's concurrent executions; None: no applied value in the account."""
        expected = {"ServiceCode": "lambda", "QuotaCode": "L-B99A9384"}
        if value is None:
            self.quotas.add_client_error(
                "get_service_quota",
                "NoSuchResourceException",
                "The request failed because the specified service quota does not exist.",
                expected_params=expected,
            )
        else:
            self.quotas.add_response(
                "get_service_quota", {"Quota": entry("lambda", "Concurrent executions", value)}, expected
            )

    def vcpus(self, instance_type: str, count: int) -> None:
        self.ec2.add_response(
            "describe_instance_types",
            {"InstanceTypes": [{"InstanceType": instance_type, "VCpuInfo": {"DefaultVCpus": count}}]},
            {"InstanceTypes": [instance_type]},
        )


@pytest.fixture
def account(fake) -> Account:
    return Account(fake)


def enough(
    account: Account,
    *,
    sagemaker: dict | None = None,
    sagemaker_defaults: dict | None = None,
    lambda_value: float = 1000,
    ec2: dict | None = None,
    fixed: frozenset = frozenset(),
) -> None:
    """A sufficient account for cdk.json's defaults, changed by the arguments, in the order preflight asks."""
    account.vcpus("g4dn.xlarge", 4)
    account.applied("sagemaker", {**OTHER, **ENOUGH, **(sagemaker or {})}, fixed=fixed)
    if sagemaker_defaults is not None:
        account.defaults("sagemaker", sagemaker_defaults)
    account.concurrency(lambda_value)
    account.applied("ec2", {STANDARD: 1152, G_AND_VT: 64, **(ec2 or {})})


def row(result, quota: str) -> list[str]:
    """The table row of ``quota``: requirement, needed, available, status, service: name."""
    (line,) = [line for line in result.out.splitlines() if line.endswith(f": {quota}") and line.startswith("  ")]
    return [cell.strip() for cell in line.strip().split("  ") if cell.strip()]


def fix_lines(result) -> list[str]:
    lines = result.out.split("\nTo fix:\n", 1)[1].split("\n\nNotes:\n", 1)[0]
    return lines.splitlines()


SHORT_ERROR = (
    "error: {} of {} quotas in eu-west-1 are short or not found: request the increases shown (approval can take "
    "days) or change the settings, then run dogbreeds preflight again.\n"
)


def test_all_quotas_enough(fake, account, run_cli):
    enough(account)
    result = run_cli("preflight")
    fake.assert_stubs_used()
    assert result.code == 0, result.err
    assert result.err == ""
    assert result.out.startswith(f"Service quotas in {REGION} for the settings of dogbreeds (cdk.json):\n")
    assert row(result, G4DN_TRAINING) == [
        "tuning trials, then final training job",
        "2",
        "4",
        "OK",
        f"sagemaker: {G4DN_TRAINING}",
    ]
    assert row(result, ALL_TRAINING)[1:4] == ["2", "4", "OK"]
    assert row(result, PER_JOB) == ["final training job", "2", "20", "OK", f"sagemaker: {PER_JOB}"]
    assert row(result, PARALLEL_TRIALS) == ["tuning job", "2", "10", "OK", f"sagemaker: {PARALLEL_TRIALS}"]
    assert row(result, TRIALS)[1:4] == ["6", "750", "OK"]
    assert row(result, TUNING_JOBS)[1:4] == ["1", "100", "OK"]
    assert row(result, G4DN_ENDPOINT) == ["endpoint, blue/green update", "6", "6", "OK", f"sagemaker: {G4DN_ENDPOINT}"]
    assert row(result, ALL_ENDPOINTS)[1:4] == ["6", "20", "OK"]
    assert row(result, T3_NOTEBOOK) == ["notebook instance", "1", "2", "OK", f"sagemaker: {T3_NOTEBOOK}"]
    assert row(result, "Concurrent executions") == [
        "Lambda reserved concurrency",
        "110",
        "1000",
        "OK",
        "lambda: Concurrent executions",
    ]
    assert row(result, G_AND_VT) == ["EC2 training instance", "4", "64", "OK", f"ec2: {G_AND_VT}"]
    assert (
        "  - Running On-Demand G and VT instances: the EC2 training stack launches 1 x g4dn.xlarge on demand, and "
        "EC2 counts this quota in vCPUs: g4dn.xlarge has 4.\n" in result.out
    )
    assert "To fix:" not in result.out
    assert result.out.endswith("\nAll 11 quotas are enough for these settings.\n")


def test_short_training_quota_prints_the_request(fake, account, run_cli):
    enough(account, sagemaker={G4DN_TRAINING: 1})
    result = run_cli("--profile", "ops", "preflight")
    fake.assert_stubs_used()
    assert result.code == EXIT_FAILED
    assert result.err == SHORT_ERROR.format(1, 11)
    assert row(result, G4DN_TRAINING)[1:4] == ["2", "1", "SHORT"]
    assert fix_lines(result) == [
        "  ml.g4dn.xlarge for training job usage (SHORT): 2 needed, 1 available.",
        "    aws service-quotas request-service-quota-increase --service-code sagemaker --quota-code L-3F53BF0F "
        "--desired-value 2 --region eu-west-1 --profile ops",
        "    https://eu-west-1.console.aws.amazon.com/servicequotas/home/services/sagemaker/quotas/L-3F53BF0F",
    ]


def test_a_quota_that_cannot_be_raised_says_to_change_the_settings(fake, account, run_cli):
    enough(account, sagemaker={G4DN_TRAINING: 40, PER_JOB: 10}, fixed=frozenset({PER_JOB}))
    result = run_cli("preflight", "-c", "training_instance_count=16", "-c", "tuning_enabled=false")
    fake.assert_stubs_used()
    assert result.code == EXIT_FAILED
    assert result.err == SHORT_ERROR.format(2, 8)
    assert result.out.startswith(
        f"Service quotas in {REGION} for the settings of dogbreeds "
        "(cdk.json, -c training_instance_count=16 -c tuning_enabled=false):\n"
    )
    assert row(result, G4DN_TRAINING) == ["final training job", "16", "40", "OK", f"sagemaker: {G4DN_TRAINING}"]
    assert row(result, ALL_TRAINING)[1:4] == ["16", "4", "SHORT"]
    assert row(result, PER_JOB)[1:4] == ["16", "10", "SHORT"]
    assert PARALLEL_TRIALS not in result.out  # tuning is off
    assert "  - tuning_enabled=false: tuning's quotas are not checked.\n" in result.out
    assert fix_lines(result) == [
        "  Number of instances across all training jobs (SHORT): 16 needed, 4 available.",
        "    aws service-quotas request-service-quota-increase --service-code sagemaker --quota-code L-00C91CB5 "
        "--desired-value 16 --region eu-west-1",
        "    https://eu-west-1.console.aws.amazon.com/servicequotas/home/services/sagemaker/quotas/L-00C91CB5",
        "  Maximum number of instances per training job (SHORT): 16 needed, 10 available; not adjustable: change "
        "training_instance_count.",
    ]


@pytest.mark.parametrize(
    ("overrides", "needed", "status"),
    [((), "6", "SHORT"), (("-c", "endpoint_max_capacity=2"), "4", "OK")],
)
def test_endpoint_needs_twice_its_maximum_for_blue_green(fake, account, run_cli, overrides, needed, status):
    enough(account, sagemaker={G4DN_ENDPOINT: 5})
    result = run_cli("preflight", *overrides)
    fake.assert_stubs_used()
    assert row(result, G4DN_ENDPOINT) == [
        "endpoint, blue/green update",
        needed,
        "5",
        status,
        f"sagemaker: {G4DN_ENDPOINT}",
    ]
    assert row(result, ALL_ENDPOINTS)[1:4] == [needed, "20", "OK"]
    most = int(needed) // 2
    assert (
        f"  - ml.g4dn.xlarge for endpoint usage, Number of instances across active endpoints: autoscaling runs up to "
        f"{most} x ml.g4dn.xlarge; the endpoint stack updates blue/green: the new fleet starts at the old fleet's size "
        "while the old one keeps serving until the rollback alarms have watched the new one (10 minutes), so an update "
        f"at full scale needs 2 x {most} = {needed}.\n"
    ) in result.out
    assert result.code == (0 if status == "OK" else EXIT_FAILED)


def test_tuning_and_training_on_one_type_need_the_larger_count_not_the_sum(fake, account, run_cli):
    enough(account, sagemaker={G4DN_TRAINING: 3, ALL_TRAINING: 3})
    result = run_cli("preflight", "-c", "tuning_max_parallel_jobs=3")
    fake.assert_stubs_used()
    assert result.code == 0, result.err
    assert row(result, G4DN_TRAINING) == [
        "tuning trials, then final training job",
        "3",
        "3",
        "OK",
        f"sagemaker: {G4DN_TRAINING}",
    ]
    assert row(result, ALL_TRAINING) == [
        "tuning trials, then final training job",
        "3",
        "3",
        "OK",
        f"sagemaker: {ALL_TRAINING}",
    ]
    assert row(result, PARALLEL_TRIALS)[1:4] == ["3", "10", "OK"]
    assert (
        "  - ml.g4dn.xlarge for training job usage: tuning runs up to 3 trials at once, each on 1 x ml.g4dn.xlarge, "
        "on demand; then the final job runs 2 x ml.g4dn.xlarge. The pipeline runs them one after the other (the final "
        "job starts when the tuning job has ended), so they share the quota and need the larger count, 3, not the "
        "sum.\n"
    ) in result.out
    assert "nothing stops two executions at once (dogbreeds train twice): those add up." in result.out


def test_tuning_on_another_type_has_its_own_row(fake, account, run_cli):
    enough(account, sagemaker={G5_TRAINING: 2, ALL_TRAINING: 3})
    result = run_cli("preflight", "-c", "tuning_instance_type=ml.g5.xlarge", "-c", "tuning_max_parallel_jobs=3")
    fake.assert_stubs_used()
    assert row(result, G5_TRAINING) == ["tuning trials", "3", "2", "SHORT", f"sagemaker: {G5_TRAINING}"]
    assert row(result, G4DN_TRAINING) == ["final training job", "2", "4", "OK", f"sagemaker: {G4DN_TRAINING}"]
    # The account-wide count is shared by both phases whatever the types: still the larger, 3.
    assert row(result, ALL_TRAINING)[:4] == ["tuning trials, then final training job", "3", "3", "OK"]
    assert result.code == EXIT_FAILED
    assert result.err == SHORT_ERROR.format(1, 12)


def test_spot_training_uses_the_spot_quotas_and_tuning_stays_on_demand(fake, account, run_cli):
    # Spot quotas with no applied value: AWS's defaults (ListAWSDefaultServiceQuotas) hold.
    enough(account, sagemaker={ALL_SPOT: 4}, sagemaker_defaults={**OTHER, G4DN_SPOT: 0, PER_SPOT_JOB: 20})
    result = run_cli("preflight", "-c", "training_use_spot=true")
    fake.assert_stubs_used()
    assert row(result, G4DN_TRAINING) == ["tuning trials", "2", "4", "OK", f"sagemaker: {G4DN_TRAINING}"]
    assert row(result, ALL_TRAINING) == ["tuning trials", "2", "4", "OK", f"sagemaker: {ALL_TRAINING}"]
    assert row(result, G4DN_SPOT) == [
        "final training job (spot)",
        "2",
        "0 (default)",
        "SHORT",
        f"sagemaker: {G4DN_SPOT}",
    ]
    assert row(result, ALL_SPOT)[1:4] == ["2", "4", "OK"]
    assert row(result, PER_SPOT_JOB)[1:4] == ["2", "20 (default)", "OK"]
    assert f": {PER_JOB}\n" not in result.out  # the spot job's own limit applies instead
    assert (
        "  - ml.g4dn.xlarge for spot training job usage: the final job runs 2 x ml.g4dn.xlarge as managed spot.\n"
        in (result.out)
    )
    assert fix_lines(result)[1] == (
        "    aws service-quotas request-service-quota-increase --service-code sagemaker --quota-code L-944F78BB "
        "--desired-value 2 --region eu-west-1"
    )
    assert result.code == EXIT_FAILED


def test_lambda_concurrency_of_a_new_account_cannot_hold_the_reservation(fake, account, run_cli):
    enough(account, lambda_value=10)
    result = run_cli("preflight")
    fake.assert_stubs_used()
    assert result.code == EXIT_FAILED
    assert row(result, "Concurrent executions") == [
        "Lambda reserved concurrency",
        "110",
        "10",
        "SHORT",
        "lambda: Concurrent executions",
    ]
    assert fix_lines(result) == [
        "  Concurrent executions (SHORT): 110 needed, 10 available. Reserving 10 is impossible with 10 concurrent "
        "executions: it would leave 0 unreserved, below the documented minimum of 100. New accounts often start "
        "at 10; AWS raises it with use, or on request.",
        "    aws service-quotas request-service-quota-increase --service-code lambda --quota-code L-B99A9384 "
        "--desired-value 110 --region eu-west-1",
        "    https://eu-west-1.console.aws.amazon.com/servicequotas/home/services/lambda/quotas/L-B99A9384",
    ]
    assert (
        "  - Concurrent executions: the invoker reserves 10, and Lambda keeps at least 100 of the account's "
        "concurrency unreserved for functions without a reservation: 10 + 100 = 110 (reservations of other "
        "functions in the account come on top).\n"
    ) in result.out


def test_lambda_concurrency_just_short(fake, account, run_cli):
    enough(account, lambda_value=105)
    result = run_cli("preflight")
    assert fix_lines(result)[0] == (
        "  Concurrent executions (SHORT): 110 needed, 105 available. Reserving 10 would leave 95 unreserved, below "
        "the documented minimum of 100."
    )


def test_lambda_concurrency_without_an_applied_value_reads_the_default(fake, account, run_cli):
    account.vcpus("g4dn.xlarge", 4)
    account.applied("sagemaker", ENOUGH)
    account.concurrency(None)
    account.defaults("lambda", {"Concurrent executions": 1000})
    account.applied("ec2", {G_AND_VT: 8})
    result = run_cli("preflight")
    fake.assert_stubs_used()
    assert result.code == 0, result.err
    assert row(result, "Concurrent executions")[1:4] == ["110", "1000 (default)", "OK"]


def test_an_instance_type_not_offered_in_the_region_is_not_found(fake, account, run_cli):
    """Types botocore knows (the settings accept them) that the region does not offer."""
    account.ec2.add_client_error(
        "describe_instance_types",
        "InvalidInstanceType",
        "The following supplied instance types do not exist: [g6.xlarge]",
        expected_params={"InstanceTypes": ["g6.xlarge"]},
    )
    account.applied("sagemaker", ENOUGH, pages=2)
    account.defaults("sagemaker", OTHER, pages=2)  # not there either
    account.concurrency(1000)
    result = run_cli(
        "preflight", "-c", "endpoint_instance_type=ml.g6.xlarge", "-c", "ec2_training_instance_type=g6.xlarge"
    )
    fake.assert_stubs_used()  # EC2's quotas were not listed: there is nothing to compare
    assert result.code == EXIT_FAILED
    assert result.err == SHORT_ERROR.format(2, 11)
    assert row(result, "ml.g6.xlarge for endpoint usage") == [
        "endpoint, blue/green update",
        "6",
        "-",
        "NOT FOUND",
        "sagemaker: ml.g6.xlarge for endpoint usage",
    ]
    assert row(result, G_AND_VT) == ["EC2 training instance", "-", "-", "NOT FOUND", f"ec2: {G_AND_VT}"]
    assert fix_lines(result) == [
        "  ml.g6.xlarge for endpoint usage (NOT FOUND): Service Quotas has no quota 'ml.g6.xlarge for endpoint usage' "
        "for sagemaker in eu-west-1: the type may not be offered in this region; choose another region or change "
        "endpoint_instance_type, endpoint_max_capacity.",
        "  Running On-Demand G and VT instances (NOT FOUND): EC2 does not offer g6.xlarge in eu-west-1: choose another "
        "type (ec2_training_instance_type).",
    ]


@pytest.mark.parametrize(
    ("instance_type", "vcpus", "quota"),
    [
        ("m7i.2xlarge", 8, STANDARD),
        ("im4gn.large", 2, STANDARD),
        ("p4d.24xlarge", 96, "Running On-Demand P instances"),
        ("inf2.xlarge", 4, "Running On-Demand Inf instances"),
    ],
)
def test_the_ec2_family_picks_its_on_demand_vcpu_quota(fake, account, run_cli, instance_type, vcpus, quota):
    account.vcpus(instance_type, vcpus)
    account.applied("sagemaker", ENOUGH)
    account.concurrency(1000)
    account.applied(
        "ec2", {G_AND_VT: 64, STANDARD: 32, "Running On-Demand P instances": 0, "Running On-Demand Inf instances": 0}
    )
    result = run_cli("preflight", "-c", f"ec2_training_instance_type={instance_type}")
    fake.assert_stubs_used()
    available = {STANDARD: "32"}.get(quota, "0")
    status = "OK" if int(available) >= vcpus else "SHORT"
    assert row(result, quota) == ["EC2 training instance", str(vcpus), available, status, f"ec2: {quota}"]


def test_an_ec2_family_without_an_on_demand_quota(fake, account, run_cli):
    account.applied("sagemaker", ENOUGH)
    account.concurrency(1000)
    result = run_cli("preflight", "-c", "ec2_training_instance_type=mac2.metal")
    fake.assert_stubs_used()
    assert row(result, "Running On-Demand instances of family mac2")[:4] == [
        "EC2 training instance",
        "-",
        "-",
        "NOT FOUND",
    ]
    assert (
        "  Running On-Demand instances of family mac2 (NOT FOUND): no On-Demand vCPU quota is known for the instance "
        "family mac2: choose another type (ec2_training_instance_type)."
    ) in fix_lines(result)


def test_every_page_is_read(fake, account, run_cli):
    account.vcpus("g4dn.xlarge", 4)
    # The training quota is on the last of three pages; the notebook's only among AWS's defaults, on page 2 of 2.
    sagemaker = {**OTHER, **{k: v for k, v in ENOUGH.items() if k not in (G4DN_TRAINING, T3_NOTEBOOK)}}
    account.applied("sagemaker", {**sagemaker, G4DN_TRAINING: 2}, pages=3)
    account.defaults("sagemaker", {**OTHER, "ml.t3.large for notebook instance usage": 0, T3_NOTEBOOK: 1}, pages=2)
    account.concurrency(1000)
    account.applied("ec2", {STANDARD: 1152, "Running On-Demand P instances": 0, G_AND_VT: 4}, pages=2)
    result = run_cli("preflight")
    fake.assert_stubs_used()
    assert result.code == 0, result.err
    assert row(result, G4DN_TRAINING)[1:4] == ["2", "2", "OK"]
    assert row(result, T3_NOTEBOOK)[1:4] == ["1", "1 (default)", "OK"]
    assert row(result, G_AND_VT)[1:4] == ["4", "4", "OK"]


def test_json_output(fake, account, run_cli):
    enough(account, sagemaker={G4DN_TRAINING: 1})
    result = run_cli("preflight", "--json")
    fake.assert_stubs_used()
    assert result.code == EXIT_FAILED
    assert result.err == SHORT_ERROR.format(1, 11)
    report = json.loads(result.out)
    assert report["region"] == REGION and report["project_name"] == "dogbreeds" and report["ok"] is False
    assert len(report["checks"]) == 11
    (training,) = [c for c in report["checks"] if c["quota_name"] == G4DN_TRAINING]
    assert training == {
        "requirement": "tuning trials, then final training job",
        "service_code": "sagemaker",
        "quota_name": G4DN_TRAINING,
        "quota_code": "L-3F53BF0F",
        "needed": 2,
        "available": 1.0,
        "source": "applied",
        "adjustable": True,
        "status": "SHORT",
        "why": (
            "tuning runs up to 2 trials at once, each on 1 x ml.g4dn.xlarge, on demand; then the final job runs 2 x "
            "ml.g4dn.xlarge. The pipeline runs them one after the other (the final job starts when the tuning job "
            "has ended), so they share the quota and need the larger count, 2, not the sum"
        ),
        "detail": "2 needed, 1 available",
        "request_command": (
            "aws service-quotas request-service-quota-increase --service-code sagemaker --quota-code L-3F53BF0F "
            "--desired-value 2 --region eu-west-1"
        ),
        "console_url": "https://eu-west-1.console.aws.amazon.com/servicequotas/home/services/sagemaker/quotas/L-3F53BF0F",
        "settings": [
            "tuning_instance_type",
            "tuning_max_parallel_jobs",
            "training_instance_type",
            "training_instance_count",
            "training_use_spot",
        ],
    }
    (lam,) = [c for c in report["checks"] if c["service_code"] == "lambda"]
    assert (lam["needed"], lam["available"], lam["status"], lam["request_command"]) == (110, 1000.0, "OK", None)
    assert [c["status"] for c in report["checks"]].count("OK") == 10


def test_json_output_all_ok(fake, account, run_cli):
    enough(account)
    result = run_cli("preflight", "--json")
    assert result.code == 0 and result.err == ""
    assert json.loads(result.out)["ok"] is True


def test_access_denied_names_the_permissions(fake, account, run_cli):
    account.vcpus("g4dn.xlarge", 4)
    account.quotas.add_client_error(
        "list_service_quotas",
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/ops is not authorized to perform: servicequotas:ListServiceQuotas",
        400,
    )
    result = run_cli("preflight")
    assert result.code == EXIT_AWS
    assert result.out == ""
    assert result.err == (
        "error: Access denied to ListServiceQuotas (User: arn:aws:iam::123456789012:user/ops is not authorized to "
        "perform: servicequotas:ListServiceQuotas): preflight needs servicequotas:ListServiceQuotas, "
        "servicequotas:ListAWSDefaultServiceQuotas, servicequotas:GetServiceQuota, ec2:DescribeInstanceTypes.\n"
    )


def test_ec2_access_denied_too(fake, account, run_cli):
    account.ec2.add_client_error("describe_instance_types", "UnauthorizedOperation", "You are not authorized", 403)
    result = run_cli("preflight")
    assert result.code == EXIT_AWS
    assert result.err.startswith(
        "error: Access denied to DescribeInstanceTypes (You are not authorized): preflight needs "
    )


def test_other_aws_errors_are_one_line(fake, account, run_cli):
    account.vcpus("g4dn.xlarge", 4)
    account.quotas.add_client_error("list_service_quotas", "ServiceException", "Something went wrong", 500)
    result = run_cli("preflight")
    assert result.code == EXIT_FAILED
    assert result.err == "error: AWS ListServiceQuotas failed: ServiceException: Something went wrong\n"


def test_no_credentials_is_a_clear_error(aws_env, monkeypatch, run_cli):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = run_cli("--region", REGION, "preflight")
    assert result.code == EXIT_AWS
    assert result.err.startswith("error: No AWS credentials found: configure them (`aws configure`")
    assert result.out == "" and "Traceback" not in result.err


def test_a_bad_setting_is_a_usage_error_before_any_call(fake, account, run_cli):
    result = run_cli("preflight", "-c", "training_instance_count=two")
    assert result.code == EXIT_USAGE
    assert result.err == 'error: training_instance_count="two": accepted is a whole number.\n'
    assert fake.created == []


def test_an_instance_type_botocore_does_not_know_is_a_usage_error(fake, account, run_cli):
    result = run_cli("preflight", "-c", "endpoint_instance_type=ml.g9.xlarge")
    assert result.code == EXIT_USAGE
    assert result.err.startswith(
        'error: endpoint_instance_type="ml.g9.xlarge": accepted is a SageMaker endpoint instance type such as '
        "ml.g4dn.xlarge (botocore "
    )
    assert fake.created == []


def test_help_names_the_permissions(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["preflight", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "servicequotas:ListServiceQuotas" in text and "ec2:DescribeInstanceTypes" in text
    assert "Exit code 1 when a quota is short or not found" in text


def test_the_stacks_behave_as_preflight_assumes(assembly):
    """The synthesized templates: tuning ends before the final job starts, trials are 1 on-demand instance, no warm
    pools; the endpoint updates blue/green keeping its instance count; the Lambda reserves the configured count."""
    settings, names = assembly.settings, assembly.settings.names
    deployment = Deployment.from_directory(assembly.directory)
    training_stack = names.stack("training")
    training = deployment.templates[training_stack]
    machines = [r for r in training["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    # the pipeline (the stack holds the approval recorder too)
    (machine,) = [m for m in machines if m["Properties"].get("StateMachineName") == names.state_machine]
    states = json.loads(deployment.resolve(training_stack, machine["Properties"]["DefinitionString"]))["States"]
    tune = states["Tune hyperparameters"]
    assert tune["Resource"].endswith(":createHyperParameterTuningJob.sync") and tune["Next"] == "Train"
    assert states["Train"]["Resource"].endswith(":createTrainingJob.sync")
    definition = tune["Arguments"]["TrainingJobDefinition"]
    assert "EnableManagedSpotTraining" not in definition
    assert "'InstanceCount': 1," in definition["ResourceConfig"]
    assert tune["Arguments"]["HyperParameterTuningJobConfig"]["Strategy"] == "Bayesian"
    assert "KeepAlivePeriodInSeconds" not in json.dumps(states)

    endpoint = deployment.templates[names.stack("endpoint")]
    (props,) = [r["Properties"] for r in endpoint["Resources"].values() if r["Type"] == "AWS::SageMaker::Endpoint"]
    policy = props["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TerminationWaitInSeconds"] == preflight.BLUE_GREEN_WAIT_MINUTES * 60
    assert props["RetainAllVariantProperties"] is True

    invoker = deployment.templates[names.stack("invoker")]
    (function,) = [r["Properties"] for r in invoker["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert function["ReservedConcurrentExecutions"] == settings.lambda_reserved_concurrency
