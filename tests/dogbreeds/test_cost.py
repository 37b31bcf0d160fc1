"""The cost estimate: arithmetic from the price table, following the settings."""

from __future__ import annotations

import pytest

from dogbreeds import cost
from stacks.settings import Settings, defaults

PRICES = cost.load_prices()


def _estimate(**overrides) -> cost.Estimate:
    return cost.estimate(Settings.from_mapping({**defaults(), **overrides}), PRICES, cost.Usage())


def _line(lines: list[cost.Line], item: str) -> cost.Line:
    (found,) = [line for line in lines if line.item == item]
    return found


def test_price_table_says_where_and_when():
    assert PRICES["region"] == "us-east-1"
    assert PRICES["as_of"] and PRICES["source"]


def test_endpoint_costs_min_to_max_capacity():
    line = _line(_estimate().monthly, "Endpoint instances")
    hourly = PRICES["sagemaker_hosting_per_hour"]["ml.g4dn.xlarge"]
    assert line.low == pytest.approx(1 * hourly * 730)
    assert line.high == pytest.approx(3 * hourly * 730)


def test_cost_per_million_at_the_scaling_target():
    hourly = PRICES["sagemaker_hosting_per_hour"]["ml.g4dn.xlarge"]
    line = _line(_estimate().per_million, "Endpoint at the scaling target")
    assert line.low == pytest.approx(hourly / (70 * 60) * 1e6)
    # Doubling the target halves the endpoint's share of each prediction.
    assert _line(_estimate(endpoint_target_invocations_per_instance=140).per_million, line.item).low == pytest.approx(
        line.low / 2
    )


def test_provisioned_concurrency_follows_its_autoscaling_range():
    fixed = _line(_estimate().monthly, "Lambda provisioned concurrency")
    scaled = _line(
        _estimate(lambda_provisioned_autoscaling=True, lambda_provisioned_max=4).monthly,
        "Lambda provisioned concurrency",
    )
    assert scaled.low == pytest.approx(fixed.low) and scaled.high == pytest.approx(4 * fixed.low)
    assert fixed.low == pytest.approx(0.5 * 730 * 3600 * PRICES["lambda"]["provisioned_concurrency_per_gb_second"])


def test_without_nat_there_is_no_nat_cost():
    e = _estimate(nat_gateways=0)
    assert _line(e.monthly, "NAT gateways").high == 0
    assert _line(e.per_million, "NAT data (URL fetches)").low == 0


def test_notebook_hours_include_the_idle_stop_tail():
    line = _line(_estimate(notebook_idle_minutes=30).monthly, "Notebook instance")
    assert line.low == pytest.approx(22 * 8.5 * PRICES["sagemaker_notebook_per_hour"]["ml.t3.medium"])


def test_totals_add_up():
    e = _estimate()
    assert e.monthly_total[0] == pytest.approx(sum(line.low for line in e.monthly))
    assert e.per_million_total == pytest.approx(sum(line.low for line in e.per_million))


def test_an_instance_type_missing_from_the_table_is_named(capsys):
    assert cost.main(["-c", "endpoint_instance_type=ml.g6.xlarge"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: ml.g6.xlarge has no price in sagemaker_hosting_per_hour of prices.json; add it (per hour, us-east-1)"
    )


def test_command_prints_the_table(capsys):
    assert cost.main(["--lambda-ms", "150"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Prices: us-east-1, USD, as of ")
    assert "150 ms x 512 MB" in out and "Per million predictions" in out
