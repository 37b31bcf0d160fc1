"""``dogbreeds cost``: what the configured system costs, per month and per million predictions.

Prices come from one table, dogbreeds/prices.json, which records its region and the date the prices
were taken; the configuration is the settings (cdk.json, with -c overrides as for `cdk synth`).
Per million predictions assumes the endpoint runs at its autoscaling target. Training is billed per
run, not per month, so it is shown per instance-hour. No AWS call.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from dogbreeds.ops.aws import Aws
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import UsageError
from stacks.settings import Settings

PRICES = Path(__file__).with_name("prices.json")
SECONDS_PER_HOUR = 3600
# The endpoint stack's rollback alarms, counted in alarm metrics (the 5XX rate alarm divides two metrics).
ENDPOINT_ALARM_METRICS = 4
AVAILABILITY_ZONES = 2  # the VPC spans two; the sagemaker.runtime interface endpoint has one interface in each


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


@dataclass(frozen=True)
class Line:
    item: str
    detail: str
    low: float
    high: float


@dataclass(frozen=True)
class Estimate:
    monthly: list[Line]
    per_million: list[Line]
    training_per_hour: list[Line]
    prices: dict

    @property
    def monthly_total(self) -> tuple[float, float]:
        return sum(line.low for line in self.monthly), sum(line.high for line in self.monthly)

    @property
    def per_million_total(self) -> float:
        return sum(line.low for line in self.per_million)


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
    return Estimate(
        monthly=monthly_lines(s, prices, usage),
        per_million=per_million_lines(s, prices, usage),
        training_per_hour=training_lines(s, prices),
        prices=prices,
    )


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
    per_instance_per_million = endpoint_hour / (s.endpoint_target_invocations_per_instance * 60) * 1_000_000
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
            f"{s.endpoint_target_invocations_per_instance} invocations/min per {s.endpoint_instance_type}",
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


def render(e: Estimate) -> str:
    p = e.prices
    out = [f"Prices: {p['region']}, {p['currency']}, as of {p['as_of']} ({PRICES.name})", "", "Per month"]
    out += [f"  {line.item:<34} {_range(line):>22}   {line.detail}" for line in e.monthly]
    low, high = e.monthly_total
    out += [f"  {'Total':<34} {_range(Line('', '', low, high)):>22}", "", "Per million predictions"]
    out += [f"  {line.item:<34} {_range(line):>22}   {line.detail}" for line in e.per_million]
    out += [f"  {'Total':<34} {_money(e.per_million_total):>22}", "", "Training, per hour of a running job"]
    out += [f"  {line.item:<34} {_range(line):>22}   {line.detail}" for line in e.training_per_hour]
    return "\n".join(out)


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _range(line: Line) -> str:
    return _money(line.low) if abs(line.high - line.low) < 0.005 else f"{_money(line.low)} - {_money(line.high)}"


# --- the command (dogbreeds cost) ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, default in Usage().__dict__.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=type(default), default=default, help=f"usage assumption (default: {default})")


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    del aws  # prices come from the table, not from AWS
    usage = Usage(**{name: getattr(args, name) for name in Usage().__dict__})
    try:
        print(render(estimate(config.settings, load_prices(), usage)))
    except PriceError as err:
        raise UsageError(str(err)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dogbreeds.cost ...``: the same as ``dogbreeds cost ...``."""
    from dogbreeds import cli

    return cli.main(["cost", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
