"""``dogbreeds cost``: what the configured system costs, per month and per million predictions.

Prices come from one table, dogbreeds/prices.json, which records its region (one: us-east-1) and the date the
prices were taken; the configuration is the settings (cdk.json, with -c overrides as for `cdk synth`).
Per million predictions assumes the endpoint runs at its autoscaling target; it includes the REST API in
front of the Lambda (requests, access logs, X-Ray traces) and, with api_waf, its web ACL. The endpoint's instances
are also priced on the GPU default (ml.g4dn.xlarge) and the CPU option (ml.c7i.xlarge) side by side, each at the
throughput its autoscaling target assumes, with where that figure comes from. Training is billed
per run, not per month, so it is shown per instance-hour. No AWS call. --region names another region than
the table's: refused, as that region's prices are not in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dogbreeds.ops.aws import Aws
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import UsageError
from dogbreeds_stacks.instances import (
    CPU_SECONDS_PER_REQUEST,
    SCALING_SAFETY_FACTOR,
    derived_invocations_per_minute,
    is_gpu,
    vcpus,
)
from dogbreeds_stacks.settings import Settings

PRICES = Path(__file__).with_name("prices.json")
SECONDS_PER_HOUR = 3600
# The endpoint stack's rollback alarms, counted in alarm metrics (the 5XX rate alarm divides two metrics).
ENDPOINT_ALARM_METRICS = 4
AVAILABILITY_ZONES = 2  # the VPC spans two; the sagemaker.runtime interface endpoint has one interface in each
# The web ACL's rules (dogbreeds_stacks/api.py): the per-IP rate limit and three AWS managed rule groups, which
# AWS WAF bills as one rule each (these three carry no subscription fee of their own).
WAF_RULES = 4
# X-Ray's default sampling rule: the first request each second, then 5% of the others.
XRAY_RESERVOIR_PER_SECOND = 1
XRAY_FIXED_RATE = 0.05
# The endpoint options compared beside the configuration: the GPU default and the CPU option (README: "GPU or CPU").
COMPARED_ENDPOINT_TYPES = ("ml.g4dn.xlarge", "ml.c7i.xlarge")
# The price table's section that dates the hosting prices added after its first date.
ADDED_HOSTING = "sagemaker_hosting_added"


class PriceError(KeyError):
    """The price table lacks something the configuration uses."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Usage:
    """Assumptions about how the system is used; each is a command-line option."""

    notebook_hours_per_day: float = 8.0
    workdays_per_month: int = 22
    lambda_ms: float = 300.0
    image_kb: float = 150.0
    url_share: float = 0.5
    access_log_bytes: float = 700.0


@dataclass(frozen=True)
class Line:
    item: str
    detail: str
    low: float
    high: float


@dataclass(frozen=True)
class EndpointOption:
    """One endpoint instance type: its instances' cost per month and per million predictions at its target."""

    instance_type: str
    configured: bool
    hourly: float
    invocations_per_minute: int  # the autoscaling target: the throughput assumed per instance
    basis: str  # where that figure comes from
    monthly: Line
    per_million: float


@dataclass(frozen=True)
class Estimate:
    monthly: list[Line]
    per_million: list[Line]
    training_per_hour: list[Line]
    prices: dict
    notes: list[str] = field(default_factory=list)
    endpoint_options: list[EndpointOption] = field(default_factory=list)

    @property
    def monthly_total(self) -> tuple[float, float]:
        return sum(line.low for line in self.monthly), sum(line.high for line in self.monthly)

    @property
    def per_million_total(self) -> tuple[float, float]:
        return sum(line.low for line in self.per_million), sum(line.high for line in self.per_million)


def load_prices(path: Path = PRICES) -> dict:
    return json.loads(path.read_text())


def _price(prices: dict, table: str, instance_type: str) -> float:
    try:
        return prices[table][instance_type]
    except KeyError:
        raise PriceError(
            f"{instance_type} has no price in {table} of {PRICES.name}; add it (per hour, {prices['region']})"
        ) from None


def estimate(s: Settings, prices: dict, usage: Usage = Usage()) -> Estimate:
    notes = []
    if s.api_auth == "cognito":
        notes.append(
            "api_auth=cognito: Amazon Cognito bills machine-to-machine app clients and token requests; they are not "
            "in the table (see aws.amazon.com/cognito/pricing)."
        )
    return Estimate(
        monthly=monthly_lines(s, prices, usage) + api_monthly_lines(s, prices),
        per_million=per_million_lines(s, prices, usage) + api_per_million_lines(s, prices, usage),
        training_per_hour=training_lines(s, prices),
        prices=prices,
        notes=notes,
        endpoint_options=endpoint_options(s, prices),
    )


def throughput_basis(s: Settings, instance_type: str) -> tuple[int, str]:
    """The invocations per minute per instance assumed for ``instance_type``, and where the figure comes from."""
    if instance_type == s.endpoint_instance_type and s.endpoint_target_invocations_per_instance:
        return s.endpoint_target_invocations_per_instance, "endpoint_target_invocations_per_instance, as set"
    target = derived_invocations_per_minute(instance_type)
    if is_gpu(instance_type):
        return target, "the GPU default target, not a measurement (docs/benchmarks.md has no GPU figures yet)"
    return target, (
        f"{vcpus(instance_type)} vCPUs / {CPU_SECONDS_PER_REQUEST * 1000:.0f} ms of vCPU time per fp32 request "
        f"(docs/benchmarks.md) x 60 x {SCALING_SAFETY_FACTOR:g}; bf16 and int8 need less"
    )


def endpoint_options(s: Settings, prices: dict) -> list[EndpointOption]:
    """The configured endpoint type beside the GPU default and the CPU option, instances only."""
    hours = prices["hours_per_month"]
    options = []
    for instance_type in dict.fromkeys((s.endpoint_instance_type, *COMPARED_ENDPOINT_TYPES)):
        hourly = _price(prices, "sagemaker_hosting_per_hour", instance_type)
        target, basis = throughput_basis(s, instance_type)
        options.append(
            EndpointOption(
                instance_type=instance_type,
                configured=instance_type == s.endpoint_instance_type,
                hourly=hourly,
                invocations_per_minute=target,
                basis=basis,
                monthly=Line(
                    instance_type,
                    "",
                    s.endpoint_min_capacity * hourly * hours,
                    s.endpoint_max_capacity * hourly * hours,
                ),
                per_million=hourly / (target * 60) * 1_000_000,
            )
        )
    return options


def _flat(item: str, detail: str, cost: float) -> Line:
    return Line(item, detail, cost, cost)


def monthly_lines(s: Settings, prices: dict, usage: Usage) -> list[Line]:
    """What runs all month: the endpoint's range, provisioned concurrency, the network, the notebook."""
    hours = prices["hours_per_month"]
    endpoint_hour = _price(prices, "sagemaker_hosting_per_hour", s.endpoint_instance_type)
    provisioned_high = (
        s.lambda_provisioned_max if s.lambda_provisioned_autoscaling else s.lambda_provisioned_concurrency
    )
    provisioned_month = (
        s.lambda_memory_mb / 1024 * hours * SECONDS_PER_HOUR * prices["lambda"]["provisioned_concurrency_per_gb_second"]
    )
    notebook_hours = usage.workdays_per_month * (usage.notebook_hours_per_day + s.notebook_idle_minutes / 60)
    notebook_hour = _price(prices, "sagemaker_notebook_per_hour", s.notebook_instance_type)
    nat = s.nat_gateways * prices["nat_gateway_per_hour"] * hours
    interface = AVAILABILITY_ZONES * prices["interface_endpoint_per_az_hour"] * hours
    monitoring = (
        prices["cloudwatch_dashboard_per_month"] + ENDPOINT_ALARM_METRICS * prices["cloudwatch_alarm_metric_per_month"]
    )
    return [
        Line(
            "Endpoint instances",
            f"{s.endpoint_min_capacity}-{s.endpoint_max_capacity} x {s.endpoint_instance_type} at ${endpoint_hour}/h",
            s.endpoint_min_capacity * endpoint_hour * hours,
            s.endpoint_max_capacity * endpoint_hour * hours,
        ),
        Line(
            "Lambda provisioned concurrency",
            f"{s.lambda_provisioned_concurrency}-{provisioned_high} x {s.lambda_memory_mb} MB, always on",
            s.lambda_provisioned_concurrency * provisioned_month,
            provisioned_high * provisioned_month,
        ),
        _flat("NAT gateways", f"{s.nat_gateways} x ${prices['nat_gateway_per_hour']}/h (data: see per million)", nat),
        _flat(
            "VPC endpoint sagemaker.runtime",
            f"{AVAILABILITY_ZONES} AZs x ${prices['interface_endpoint_per_az_hour']}/h (S3 gateway endpoint: free)",
            interface,
        ),
        _flat(
            "Notebook instance",
            f"{s.notebook_instance_type}, {notebook_hours:.0f} h/month with the {s.notebook_idle_minutes}-minute idle "
            f"stop (always on: ${notebook_hour * hours:,.2f})",
            notebook_hours * notebook_hour,
        ),
        _flat("KMS key", "1 customer-managed key", prices["kms_key_per_month"]),
        _flat("CloudWatch dashboard and alarms", f"1 dashboard, {ENDPOINT_ALARM_METRICS} alarm metrics", monitoring),
    ]


def per_million_lines(s: Settings, prices: dict, usage: Usage) -> list[Line]:
    """What a million predictions cost at the autoscaling target: the endpoint's share, Lambda, the data."""
    lam = prices["lambda"]
    endpoint_hour = _price(prices, "sagemaker_hosting_per_hour", s.endpoint_instance_type)
    target, basis = throughput_basis(s, s.endpoint_instance_type)
    per_instance_per_million = endpoint_hour / (target * 60) * 1_000_000
    duration_rate = (
        lam["duration_with_provisioned_concurrency_per_gb_second"]
        if s.lambda_provisioned_concurrency
        else lam["duration_per_gb_second"]
    )
    image_gb_per_million = usage.image_kb  # kilobytes per request x a million requests = that many gigabytes
    nat_data = usage.url_share * image_gb_per_million * prices["nat_gateway_per_gb"] if s.nat_gateways else 0.0
    return [
        _flat(
            "Endpoint at the scaling target",
            f"{target} invocations/min per {s.endpoint_instance_type}: {basis}",
            per_instance_per_million,
        ),
        _flat("Lambda requests", "per million requests", lam["requests_per_million"]),
        _flat(
            "Lambda duration",
            f"{usage.lambda_ms:.0f} ms x {s.lambda_memory_mb} MB",
            usage.lambda_ms / 1000 * s.lambda_memory_mb / 1024 * duration_rate * 1_000_000,
        ),
        _flat(
            "NAT data (URL fetches)",
            f"{usage.url_share:.0%} of requests fetch a {usage.image_kb:.0f} KB image",
            nat_data,
        ),
        _flat(
            "VPC endpoint data",
            f"every image ({usage.image_kb:.0f} KB) crosses the sagemaker.runtime endpoint",
            image_gb_per_million * prices["interface_endpoint_per_gb"],
        ),
    ]


def api_monthly_lines(s: Settings, prices: dict) -> list[Line]:
    """The REST API has no monthly charge; its optional web ACL has."""
    if not s.api_waf:
        return []
    waf = prices["waf"]
    return [
        _flat(
            "WAF web ACL",
            f"1 web ACL (${waf['web_acl_per_month']:g}), {WAF_RULES} rules (${waf['rule_per_month']:g} each): "
            "per-IP rate limit, 3 AWS managed rule groups",
            waf["web_acl_per_month"] + WAF_RULES * waf["rule_per_month"],
        )
    ]


def api_per_million_lines(s: Settings, prices: dict, usage: Usage) -> list[Line]:
    """Each prediction is a request to the REST API: its price, its access-log line, its trace, and WAF's look."""
    api, logs, xray = prices["api_gateway"], prices["cloudwatch_logs"], prices["xray"]
    traces = xray["traces_recorded_per_million"]
    lines = [
        _flat(
            "API Gateway requests",
            f"REST API, ${api['rest_requests_per_million']:g} per million ({api['rest_requests_tier']})",
            api["rest_requests_per_million"],
        ),
        _flat(
            "API access logs",
            f"{usage.access_log_bytes:.0f} bytes a request into CloudWatch Logs",
            usage.access_log_bytes / 1000 * logs["ingestion_per_gb"],  # bytes x a million = that many kilobytes
        ),
        Line(
            "X-Ray traces",
            f"one trace per sampled request (API and Lambda): {XRAY_FIXED_RATE:.0%} when busy, all of them below "
            f"{XRAY_RESERVOIR_PER_SECOND} request a second (the default rule's reservoir)",
            XRAY_FIXED_RATE * traces,
            traces,
        ),
    ]
    if s.api_waf:
        lines.append(_flat("WAF requests", "every request is inspected", prices["waf"]["requests_per_million"]))
    return lines


def training_lines(s: Settings, prices: dict) -> list[Line]:
    """Training is billed per run: what an hour of each kind of job costs."""
    final = _price(prices, "sagemaker_training_per_hour", s.training_instance_type)
    trial = _price(prices, "sagemaker_training_per_hour", s.tuning_instance_type)
    return [
        _flat(
            "Final training job",
            f"{s.training_instance_count} x {s.training_instance_type}",
            s.training_instance_count * final,
        ),
        _flat(
            "Tuning",
            f"{s.tuning_max_parallel_jobs} trials at once x {s.tuning_instance_type}",
            s.tuning_max_parallel_jobs * trial,
        ),
    ]


def render(e: Estimate, region_note: str | None = None) -> str:
    p = e.prices
    out = [f"Prices: {p['region']}, {p['currency']}, as of {p['as_of']} ({PRICES.name})"]
    dated = sorted(
        {
            section["as_of"]
            for name, section in p.items()
            if isinstance(section, dict) and "as_of" in section and name != ADDED_HOSTING
        }
    )
    if dated:
        out.append(f"  API Gateway, WAF, CloudWatch Logs and X-Ray prices as of {', '.join(dated)}")
    if ADDED_HOSTING in p:
        added = p[ADDED_HOSTING]
        out.append(f"  SageMaker hosting prices of {', '.join(added['instance_types'])} as of {added['as_of']}")
    out.append(f"  The table covers {p['region']} only; other regions' prices differ.")
    if region_note:
        out.append(f"  {region_note}")
    out += ["", "Per month"]
    out += [f"  {line.item:<34} {_range(line):>22}   {line.detail}" for line in e.monthly]
    low, high = e.monthly_total
    out += [f"  {'Total':<34} {_range(Line('', '', low, high)):>22}", "", "Per million predictions"]
    out += [f"  {line.item:<34} {_range(line):>22}   {line.detail}" for line in e.per_million]
    low, high = e.per_million_total
    out += [f"  {'Total':<34} {_range(Line('', '', low, high)):>22}", "", "Training, per hour of a running job"]
    out += [f"  {line.item:<34} {_range(line):>22}   {line.detail}" for line in e.training_per_hour]
    out += render_endpoint_options(e.endpoint_options)
    if e.notes:
        out += ["", *(f"Note: {note}" for note in e.notes)]
    return "\n".join(out)


def render_endpoint_options(options: list[EndpointOption]) -> list[str]:
    """The endpoint's instances on a GPU or a CPU type: per month and per million predictions."""
    if not options:
        return []
    out = [
        "",
        "Endpoint on a GPU or a CPU type: its instances only (the rest above is the same for both)",
        f"  {'instance type':<26} {'per hour':>9} {'per month':>22} {'per million':>12}   throughput assumed per "
        "instance (the autoscaling target)",
    ]
    for o in options:
        label = f"{o.instance_type} ({'GPU' if is_gpu(o.instance_type) else 'CPU'}){' *' if o.configured else ''}"
        out.append(
            f"  {label:<26} {'$' + format(o.hourly, 'g'):>9} {_range(o.monthly):>22} {_money(o.per_million):>12}   "
            f"{o.invocations_per_minute} invocations/min: {o.basis}"
        )
    out.append("  * configured. Per million: at the target, a fleet busy enough to stay at it; README: GPU or CPU.")
    return out


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _range(line: Line) -> str:
    return _money(line.low) if abs(line.high - line.low) < 0.005 else f"{_money(line.low)} - {_money(line.high)}"


# --- the command (dogbreeds cost) ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, default in Usage().__dict__.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=type(default), default=default, help=f"usage assumption (default: {default})")


def region_check(prices: dict, asked: str | None, environment: dict[str, str]) -> str | None:
    """Refuse --region for a region the table lacks; a note when the environment names one."""
    covered = prices["region"]
    if asked and asked != covered:
        raise UsageError(
            f"--region {asked}: {PRICES.name} has {covered} prices only (as of {prices['as_of']}), and prices differ "
            f"by region; run without --region for {covered}'s, or add {asked}'s prices to the table."
        )
    configured = environment.get("AWS_REGION") or environment.get("AWS_DEFAULT_REGION")
    if not asked and configured and configured != covered:
        return f"These are {covered}'s prices, not those of {configured} (AWS_REGION): {PRICES.name} has no others."
    return None


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    del aws  # prices come from the table, not from AWS
    usage = Usage(**{name: getattr(args, name) for name in Usage().__dict__})
    prices = load_prices()
    note = region_check(prices, getattr(args, "region", None), dict(os.environ))
    try:
        print(render(estimate(config.settings, prices, usage), note))
    except PriceError as err:
        raise UsageError(str(err)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dogbreeds.cost ...``: the same as ``dogbreeds cost ...``."""
    from dogbreeds import cli

    return cli.main(["cost", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
