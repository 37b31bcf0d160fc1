"""What the configured system costs: per month, and per million predictions at the autoscaling target.

    python -m dogbreeds.cost [-c key=value ...] [--notebook-hours-per-day 8] [--lambda-ms 300] ...

Prices come from one table, dogbreeds/prices.json, which records its region and the date the prices
were taken; the configuration is the settings (cdk.json, with -c overrides as for `cdk synth`).
Training is billed per run, not per month, so it is shown per instance-hour.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from stacks.settings import Settings, SettingsError, defaults

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
    hours = prices["hours_per_month"]
    lam = prices["lambda"]
    endpoint_hour = _price(prices, "sagemaker_hosting_per_hour", s.endpoint_instance_type)
    memory_gb = s.lambda_memory_mb / 1024
    provisioned_high = (
        s.lambda_provisioned_max if s.lambda_provisioned_autoscaling else s.lambda_provisioned_concurrency
    )
    provisioned_month = memory_gb * hours * SECONDS_PER_HOUR * lam["provisioned_concurrency_per_gb_second"]
    notebook_hours = usage.workdays_per_month * (usage.notebook_hours_per_day + s.notebook_idle_minutes / 60)
    notebook_hour = _price(prices, "sagemaker_notebook_per_hour", s.notebook_instance_type)

    monthly = [
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
        Line(
            "NAT gateways",
            f"{s.nat_gateways} x ${prices['nat_gateway_per_hour']}/h (data: see per million)",
            s.nat_gateways * prices["nat_gateway_per_hour"] * hours,
            s.nat_gateways * prices["nat_gateway_per_hour"] * hours,
        ),
        Line(
            "VPC endpoint sagemaker.runtime",
            f"{AVAILABILITY_ZONES} AZs x ${prices['interface_endpoint_per_az_hour']}/h (S3 gateway endpoint: free)",
            AVAILABILITY_ZONES * prices["interface_endpoint_per_az_hour"] * hours,
            AVAILABILITY_ZONES * prices["interface_endpoint_per_az_hour"] * hours,
        ),
        Line(
            "Notebook instance",
            f"{s.notebook_instance_type}, {notebook_hours:.0f} h/month with the {s.notebook_idle_minutes}-minute idle "
            f"stop (always on: ${notebook_hour * hours:,.2f})",
            notebook_hours * notebook_hour,
            notebook_hours * notebook_hour,
        ),
        Line("KMS key", "1 customer-managed key", prices["kms_key_per_month"], prices["kms_key_per_month"]),
        Line(
            "CloudWatch dashboard and alarms",
            f"1 dashboard, {ENDPOINT_ALARM_METRICS} alarm metrics",
            prices["cloudwatch_dashboard_per_month"]
            + ENDPOINT_ALARM_METRICS * prices["cloudwatch_alarm_metric_per_month"],
            prices["cloudwatch_dashboard_per_month"]
            + ENDPOINT_ALARM_METRICS * prices["cloudwatch_alarm_metric_per_month"],
        ),
    ]

    per_instance_per_million = endpoint_hour / (s.endpoint_target_invocations_per_instance * 60) * 1_000_000
    duration_rate = (
        lam["duration_with_provisioned_concurrency_per_gb_second"]
        if s.lambda_provisioned_concurrency
        else lam["duration_per_gb_second"]
    )
    image_gb_per_million = usage.image_kb  # kilobytes per request x a million requests = that many gigabytes
    per_million = [
        Line(
            "Endpoint at the scaling target",
            f"{s.endpoint_target_invocations_per_instance} invocations/min per {s.endpoint_instance_type}",
            per_instance_per_million,
            per_instance_per_million,
        ),
        Line("Lambda requests", "per million requests", lam["requests_per_million"], lam["requests_per_million"]),
        Line(
            "Lambda duration",
            f"{usage.lambda_ms:.0f} ms x {s.lambda_memory_mb} MB",
            usage.lambda_ms / 1000 * memory_gb * duration_rate * 1_000_000,
            usage.lambda_ms / 1000 * memory_gb * duration_rate * 1_000_000,
        ),
        Line(
            "NAT data (URL fetches)",
            f"{usage.url_share:.0%} of requests fetch a {usage.image_kb:.0f} KB image",
            usage.url_share * image_gb_per_million * prices["nat_gateway_per_gb"] if s.nat_gateways else 0.0,
            usage.url_share * image_gb_per_million * prices["nat_gateway_per_gb"] if s.nat_gateways else 0.0,
        ),
        Line(
            "VPC endpoint data",
            f"every image ({usage.image_kb:.0f} KB) crosses the sagemaker.runtime endpoint",
            image_gb_per_million * prices["interface_endpoint_per_gb"],
            image_gb_per_million * prices["interface_endpoint_per_gb"],
        ),
    ]
    training = [
        Line(
            "Final training job",
            f"{s.training_instance_count} x {s.training_instance_type}",
            s.training_instance_count * _price(prices, "sagemaker_training_per_hour", s.training_instance_type),
            s.training_instance_count * _price(prices, "sagemaker_training_per_hour", s.training_instance_type),
        ),
        Line(
            "Tuning",
            f"{s.tuning_max_parallel_jobs} trials at once x {s.tuning_instance_type}",
            s.tuning_max_parallel_jobs * _price(prices, "sagemaker_training_per_hour", s.tuning_instance_type),
            s.tuning_max_parallel_jobs * _price(prices, "sagemaker_training_per_hour", s.tuning_instance_type),
        ),
    ]
    return Estimate(monthly=monthly, per_million=per_million, training_per_hour=training, prices=prices)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dogbreeds.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, as with cdk synth -c (repeatable)")  # fmt: skip
    for field, default in Usage().__dict__.items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default,
                            help=f"usage assumption (default: {default})")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        overrides = dict(item.split("=", 1) for item in args.context)
        settings = Settings.from_mapping({**defaults(), **overrides})
        usage = Usage(**{k: getattr(args, k) for k in Usage().__dict__})
        print(render(estimate(settings, load_prices(), usage)))
    except (SettingsError, PriceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError:
        print("error: -c takes KEY=VALUE, for example -c endpoint_max_capacity=5", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
