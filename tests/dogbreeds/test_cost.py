"""The cost estimate: arithmetic from the price table, following the settings."""

from __future__ import annotations

import pytest

from dogbreeds import cost
from dogbreeds_stacks.settings import Settings, defaults

PRICES = cost.load_prices()


def _estimate(**overrides) -> cost.Estimate:
    return cost.estimate(Settings.from_mapping({**defaults(), **overrides}), PRICES, cost.Usage())


def _line(lines: list[cost.Line], item: str) -> cost.Line:
    (found,) = [line for line in lines if line.item == item]
    return found


def test_price_table_says_where_and_when():
    assert PRICES["region"] == "us-east-1"
    assert PRICES["as_of"] and PRICES["source"]
    for section in ("api_gateway", "waf", "cloudwatch_logs", "xray"):
        assert PRICES[section]["as_of"] and PRICES[section]["source"], section


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
    assert e.per_million_total == pytest.approx(
        (sum(line.low for line in e.per_million), sum(line.high for line in e.per_million))
    )


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


# --- the REST API and its optional WAF ------------------------------------------------------------------------


def test_every_prediction_pays_the_api_its_access_log_and_its_trace():
    e = _estimate()
    requests = _line(e.per_million, "API Gateway requests")
    assert requests.low == requests.high == PRICES["api_gateway"]["rest_requests_per_million"] == 3.5
    logs = _line(e.per_million, "API access logs")
    assert logs.low == pytest.approx(0.7 * PRICES["cloudwatch_logs"]["ingestion_per_gb"])  # 700 B x 1e6 = 0.7 GB
    traces = _line(e.per_million, "X-Ray traces")
    assert (traces.low, traces.high) == pytest.approx((0.05 * 5.0, 5.0))
    assert not any(line.item.startswith("WAF") for line in e.monthly + e.per_million), "api_waf is off by default"


def test_the_waf_costs_its_acl_its_rules_and_its_requests_when_enabled():
    e = _estimate(api_waf=True)
    waf = PRICES["waf"]
    assert _line(e.monthly, "WAF web ACL").low == pytest.approx(waf["web_acl_per_month"] + 4 * waf["rule_per_month"])
    assert _line(e.per_million, "WAF requests").low == pytest.approx(waf["requests_per_million"])
    without = _estimate()
    assert e.monthly_total[0] - without.monthly_total[0] == pytest.approx(9.0)


def test_cognito_s_charges_are_named_as_left_out(capsys):
    assert cost.main(["-c", "api_auth=cognito"]) == 0
    assert "Note: api_auth=cognito: Amazon Cognito bills machine-to-machine" in capsys.readouterr().out
    assert _estimate().notes == []


def test_a_region_the_table_lacks_is_refused_by_name(capsys):
    assert cost.main(["--region", "eu-west-1"]) == 2
    assert capsys.readouterr().err == (
        "error: --region eu-west-1: prices.json has us-east-1 prices only (as of 2024-06-01), and prices differ by "
        "region; run without --region for us-east-1's, or add eu-west-1's prices to the table.\n"
    )


def test_the_table_s_own_region_is_priced_and_the_coverage_said(capsys, monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert cost.main(["--region", "us-east-1"]) == 0
    out = capsys.readouterr().out
    assert "  The table covers us-east-1 only; other regions' prices differ.\n" in out
    assert "AWS_REGION" not in out


def test_a_configured_region_the_table_lacks_is_said_above_the_prices(capsys, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    assert cost.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        "  These are us-east-1's prices, not those of ap-southeast-2 (AWS_REGION): prices.json has no others."
        in lines[:5]
    )
