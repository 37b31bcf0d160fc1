"""The REST API in front of the Lambda (invoker stack): authentication on its one method and no other route,
throttling from the endpoint's capacity, request validation with the model local mode validates with, access
and execution logs, X-Ray, API Gateway's account logging role, the URL output; the optional WAF, API keys and
Cognito, each synthesized once and held to the same gates (cdk-nag with every acknowledgment matched, cfn-lint)."""

from __future__ import annotations

import json
import subprocess

import pytest

from dogbreeds_stacks.api_contract import (
    ACCESS_LOG_FIELDS,
    BINARY_MEDIA_TYPES,
    GATEWAY_ERROR_TEMPLATE,
    LAMBDA_MAX_EVENT_BYTES,
    max_body_bytes,
    max_raw_image_bytes,
    request_schema,
)
from dogbreeds_stacks.nag import AUDIT_CONTEXT_KEY
from tests.helpers import arn_text, as_list, one, refs, resources
from tests.synth import Assembly, synthesize
from tests.test_gates import CFN_LINT, ROOT, _covers, _recorded_acknowledgments

VARIANTS = {
    "waf_api_key": {"api_waf": "true", "api_auth": "api_key", "api_throttle_rate_limit": "20"},
    "cognito": {"api_auth": "cognito", "api_cloudwatch_role": "false"},
}
METHOD = "AWS::ApiGateway::Method"


@pytest.fixture(scope="module")
def invoker(assembly: Assembly) -> dict:
    return assembly.template("invoker")


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Assembly]:
    """The app with WAF and API keys, and with Cognito and no account logging role (cdk-nag runs on both)."""
    return {name: synthesize(tmp_path_factory.mktemp(name), **values) for name, values in VARIANTS.items()}


def resource_refs(value: object) -> set[str]:
    """The template's own resources that ``value`` references (pseudo parameters left out)."""
    return {ref for ref in refs(value) if not ref.startswith("AWS::")}


def stage_of(template: dict) -> tuple[str, dict]:
    return one(template, "AWS::ApiGateway::Stage")


def method_settings(template: dict) -> dict:
    (settings,) = stage_of(template)[1]["Properties"]["MethodSettings"]
    return settings


# --- the API and its one method ----------------------------------------------------------------------------


def test_a_regional_rest_api_with_the_binary_media_types(invoker, settings):
    _, api = one(invoker, "AWS::ApiGateway::RestApi")
    props = api["Properties"]
    assert props["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    assert props["BinaryMediaTypes"] == list(BINARY_MEDIA_TYPES)
    assert "image/jpeg" in props["BinaryMediaTypes"] and "application/octet-stream" in props["BinaryMediaTypes"]
    assert props["Name"] == settings.names.api == "dogbreeds-api"
    assert "DisableExecuteApiEndpoint" not in props


def test_post_predict_is_the_one_method_iam_authorized_and_backed_by_the_live_alias(invoker, settings):
    (method,) = resources(invoker, METHOD).values()
    props = method["Properties"]
    assert (props["HttpMethod"], props["AuthorizationType"]) == ("POST", "AWS_IAM")
    integration = props["Integration"]
    assert (integration["Type"], integration["IntegrationHttpMethod"]) == ("AWS_PROXY", "POST")
    alias_id, alias = one(invoker, "AWS::Lambda::Alias")
    assert alias["Properties"]["Name"] == "live"
    assert resource_refs(integration["Uri"]) == {alias_id}, "the alias with the provisioned concurrency, not $LATEST"
    assert integration["TimeoutInMillis"] == settings.api_integration_timeout_seconds * 1000 == 29_000
    (resource,) = resources(invoker, "AWS::ApiGateway::Resource").values()
    assert resource["Properties"]["PathPart"] == "predict"
    assert refs(props["ResourceId"]) == {one(invoker, "AWS::ApiGateway::Resource")[0]}


@pytest.mark.parametrize("name", ["default", *VARIANTS])
def test_no_route_is_unauthenticated(name, invoker, variants):
    template = invoker if name == "default" else variants[name].template("invoker")
    methods = resources(template, METHOD)
    assert len(methods) == 1, "one method: no CORS preflight, no ANY, no proxy resource"
    for method in methods.values():
        props = method["Properties"]
        authenticated = props["AuthorizationType"] in ("AWS_IAM", "COGNITO_USER_POOLS") or props.get("ApiKeyRequired")
        assert authenticated, props
        assert props["HttpMethod"] == "POST"
    assert [r["Properties"]["PathPart"] for r in resources(template, "AWS::ApiGateway::Resource").values()] == [
        "predict"
    ]


def test_only_this_stage_s_post_predict_may_invoke_the_alias(invoker):
    (permission,) = resources(invoker, "AWS::Lambda::Permission").values()
    props = permission["Properties"]
    alias_id, _ = one(invoker, "AWS::Lambda::Alias")
    stage_id, _ = stage_of(invoker)
    api_id, _ = one(invoker, "AWS::ApiGateway::RestApi")
    assert (props["Action"], props["Principal"]) == ("lambda:InvokeFunction", "apigateway.amazonaws.com")
    assert props["FunctionName"] == {"Ref": alias_id}
    assert arn_text(props["SourceArn"]).endswith(f":<{api_id}>/<{stage_id}>/POST/predict")


# --- throttling ----------------------------------------------------------------------------------------------


def test_stage_throttling_is_derived_from_the_endpoint_and_the_lambda(invoker, settings):
    throttle = method_settings(invoker)
    assert (throttle["HttpMethod"], throttle["ResourcePath"]) == ("*", "/*")
    # 3 instances x 70 invocations a minute / 60 x 2 (an instance's peak is about twice its scaling target).
    assert throttle["ThrottlingRateLimit"] == settings.api_rate_limit == 7
    assert throttle["ThrottlingBurstLimit"] == settings.api_burst_limit == settings.lambda_reserved_concurrency == 10


def test_an_explicit_rate_replaces_the_derived_one(variants):
    assert method_settings(variants["waf_api_key"].template("invoker"))["ThrottlingRateLimit"] == 20


def test_api_keys_come_with_a_usage_plan_with_the_same_throttle(variants):
    template = variants["waf_api_key"].template("invoker")
    (method,) = resources(template, METHOD).values()
    assert method["Properties"]["AuthorizationType"] == "NONE" and method["Properties"]["ApiKeyRequired"] is True
    _, api = one(template, "AWS::ApiGateway::RestApi")
    assert api["Properties"]["ApiKeySourceType"] == "HEADER"
    _, plan = one(template, "AWS::ApiGateway::UsagePlan")
    assert plan["Properties"]["Throttle"] == {"RateLimit": 20, "BurstLimit": 10}
    (api_stage,) = plan["Properties"]["ApiStages"]
    assert api_stage["Stage"] == {"Ref": stage_of(template)[0]}
    key_id, _ = one(template, "AWS::ApiGateway::ApiKey")
    _, plan_key = one(template, "AWS::ApiGateway::UsagePlanKey")
    assert plan_key["Properties"]["KeyId"] == {"Ref": key_id}
    assert template["Outputs"]["ApiKeyId"]["Value"] == {"Ref": key_id}


def test_cognito_authorizes_access_tokens_of_the_client_credentials_grant(variants, settings):
    template = variants["cognito"].template("invoker")
    (method,) = resources(template, METHOD).values()
    props = method["Properties"]
    assert props["AuthorizationType"] == "COGNITO_USER_POOLS"
    assert props["AuthorizationScopes"] == [settings.names.api_oauth_scope] == ["dogbreeds/predict"]
    authorizer_id, authorizer = one(template, "AWS::ApiGateway::Authorizer")
    assert props["AuthorizerId"] == {"Ref": authorizer_id}
    pool_id, pool = one(template, "AWS::Cognito::UserPool")
    assert refs(authorizer["Properties"]["ProviderARNs"]) == {pool_id}
    assert pool["Properties"]["AdminCreateUserConfig"] == {"AllowAdminCreateUserOnly": True}
    _, client = one(template, "AWS::Cognito::UserPoolClient")
    assert client["Properties"]["AllowedOAuthFlows"] == ["client_credentials"]
    assert client["Properties"]["GenerateSecret"] is True
    _, domain = one(template, "AWS::Cognito::UserPoolDomain")
    assert domain["Properties"]["Domain"] == {"Fn::Join": ["-", ["dogbreeds", {"Ref": "AWS::AccountId"}]]}
    assert {"UserPoolId", "UserPoolClientId", "TokenUrl", "PredictUrl"} <= set(template["Outputs"])
    assert arn_text(template["Outputs"]["TokenUrl"]["Value"]).endswith("/oauth2/token")


# --- requests -------------------------------------------------------------------------------------------------


def test_json_bodies_are_validated_by_the_model_local_mode_validates_with(invoker):
    (method,) = resources(invoker, METHOD).values()
    props = method["Properties"]
    validator_id, validator = one(invoker, "AWS::ApiGateway::RequestValidator")
    assert props["RequestValidatorId"] == {"Ref": validator_id}
    assert validator["Properties"]["ValidateRequestBody"] is True
    assert validator["Properties"]["ValidateRequestParameters"] is True
    model_id, model = one(invoker, "AWS::ApiGateway::Model")
    assert props["RequestModels"] == {"application/json": {"Ref": model_id}}
    assert model["Properties"]["ContentType"] == "application/json"
    assert model["Properties"]["Schema"] == request_schema()
    assert props["RequestParameters"] == {"method.request.querystring.top_k": False}


def test_the_payload_limits_fit_a_lambda_invocation(settings):
    assert request_schema()["properties"]["image_base64"]["maxLength"] == max_body_bytes() < LAMBDA_MAX_EVENT_BYTES
    largest_image = settings.lambda_max_image_mb * 1024 * 1024
    assert largest_image * 4 / 3 < max_body_bytes(), "every image the Lambda takes fits its event in base64"
    assert largest_image < max_raw_image_bytes()


def test_api_gateway_s_own_answers_have_the_lambda_s_error_shape(invoker):
    answers = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in resources(invoker, "AWS::ApiGateway::GatewayResponse").values()
    }
    assert set(answers) == {"DEFAULT_4XX", "DEFAULT_5XX", "THROTTLED"}
    for answer in answers.values():
        assert answer["ResponseTemplates"] == {"application/json": GATEWAY_ERROR_TEMPLATE}
        assert answer["ResponseParameters"]["gatewayresponse.header.Content-Type"] == "'application/json'"
    assert answers["THROTTLED"]["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


# --- logs and tracing -----------------------------------------------------------------------------------------


def test_access_logs_are_json_lines_in_a_log_group_with_retention(invoker, settings):
    stage = stage_of(invoker)[1]["Properties"]
    log_id, group = one(invoker, "AWS::Logs::LogGroup", {"LogGroupName": "/aws/apigateway/dogbreeds-api/access"})
    assert resource_refs(stage["AccessLogSetting"]["DestinationArn"]) == {log_id}
    assert json.loads(stage["AccessLogSetting"]["Format"]) == ACCESS_LOG_FIELDS
    assert group["Properties"]["RetentionInDays"] == settings.log_retention_days


def test_execution_logs_are_errors_only_in_api_gateway_s_group_created_with_retention(invoker, settings):
    throttle = method_settings(invoker)
    assert (throttle["LoggingLevel"], throttle["DataTraceEnabled"]) == ("ERROR", False)  # never request bodies
    api_id, _ = one(invoker, "AWS::ApiGateway::RestApi")
    name = {"Fn::Join": ["", ["API-Gateway-Execution-Logs_", {"Ref": api_id}, "/v1"]]}
    log_id, group = one(invoker, "AWS::Logs::LogGroup", {"LogGroupName": name})
    assert group["Properties"]["RetentionInDays"] == settings.log_retention_days
    assert log_id in stage_of(invoker)[1]["DependsOn"], "created before API Gateway could create it"


def test_the_stage_is_traced_by_x_ray(invoker):
    assert stage_of(invoker)[1]["Properties"]["TracingEnabled"] is True


def test_the_account_logging_role_is_set_least_privilege_and_kept(invoker):
    account_id, account = one(invoker, "AWS::ApiGateway::Account")
    role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    role = invoker["Resources"][role_id]
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert "ManagedPolicyArns" not in role["Properties"]
    (policy_id,) = [
        k for k, p in resources(invoker, "AWS::IAM::Policy").items() if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    (statement,) = invoker["Resources"][policy_id]["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(as_list(statement["Action"])) == [
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:DescribeLogGroups",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
    ]
    assert arn_text(statement["Resource"]).endswith(":<AWS::AccountId>:log-group:*")
    for logical_id in (account_id, role_id, policy_id):
        assert invoker["Resources"][logical_id]["DeletionPolicy"] == "Retain", logical_id
    assert policy_id in account["DependsOn"], "API Gateway checks the role's permissions when it is set"
    assert account_id in stage_of(invoker)[1]["DependsOn"], "the stage logs from its first request"


def test_an_account_that_has_its_logging_role_gets_none(variants):
    template = variants["cognito"].template("invoker")
    assert resources(template, "AWS::ApiGateway::Account") == {}
    assert all(
        r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        != {"Service": "apigateway.amazonaws.com"}
        for r in resources(template, "AWS::IAM::Role").values()
    )


# --- outputs ------------------------------------------------------------------------------------------------------


def test_the_api_url_is_an_output_with_a_description(invoker):
    outputs = invoker["Outputs"]
    stage_id, _ = stage_of(invoker)
    api_id, _ = one(invoker, "AWS::ApiGateway::RestApi")
    url = outputs["PredictUrl"]
    assert arn_text(url["Value"]) == (
        f"https://<{api_id}>.execute-api.<AWS::Region>.<AWS::URLSuffix>/<{stage_id}>/predict"
    )
    assert "SigV4" in url["Description"] and "execute-api:Invoke" in url["Description"]
    assert outputs["RestApiId"]["Value"] == {"Ref": api_id}
    assert set(outputs) == {"FunctionName", "AliasArn", "PredictUrl", "RestApiId"}, "no second URL output"


# --- WAF ------------------------------------------------------------------------------------------------------------


def test_no_web_acl_unless_asked(invoker):
    assert resources(invoker, "AWS::WAFv2::WebACL") == {}
    assert resources(invoker, "AWS::WAFv2::WebACLAssociation") == {}


def test_the_web_acl_rate_limits_each_ip_and_runs_the_managed_rules(variants, settings):
    template = variants["waf_api_key"].template("invoker")
    acl_id, acl = one(template, "AWS::WAFv2::WebACL")
    props = acl["Properties"]
    assert (props["Scope"], props["DefaultAction"], props["Name"]) == ("REGIONAL", {"Allow": {}}, "dogbreeds-api")
    rules = {rule["Name"]: rule for rule in props["Rules"]}
    assert [rule["Name"] for rule in sorted(props["Rules"], key=lambda r: r["Priority"])] == [
        "RateLimitPerIp",
        "AWSManagedRulesAmazonIpReputationList",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesCommonRuleSet",
    ]
    rate = rules["RateLimitPerIp"]
    assert rate["Statement"]["RateBasedStatement"] == {
        "AggregateKeyType": "IP",
        "Limit": settings.api_waf_rate_limit,
        "EvaluationWindowSec": 300,
    }
    assert rate["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    # Its 8 KB body-size rule would block every image: it counts instead.
    assert common["RuleActionOverrides"] == [{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}]
    for name in ("AWSManagedRulesAmazonIpReputationList", "AWSManagedRulesKnownBadInputsRuleSet"):
        assert rules[name]["OverrideAction"] == {"None": {}}
        assert rules[name]["Statement"]["ManagedRuleGroupStatement"] == {"VendorName": "AWS", "Name": name}
    _, association = one(template, "AWS::WAFv2::WebACLAssociation")
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    stage_id, _ = stage_of(template)
    assert arn_text(association["Properties"]["ResourceArn"]).endswith(f"/stages/<{stage_id}>")


# --- the gates, on the variants -----------------------------------------------------------------------------------


# The findings the API acknowledges, each with its reason: the optional WAF (APIG3), the auth choice that is not a
# Cognito authorizer (COG4), API keys instead of an authorizer (APIG4), the pool's feature plan (COG8), the account
# logging role's log-group wildcard (IAM5).
API_FINDINGS = {
    "default": {"AwsSolutions-APIG3", "AwsSolutions-COG4", "AwsSolutions-IAM5"},
    "waf_api_key": {"AwsSolutions-APIG4", "AwsSolutions-COG4", "AwsSolutions-IAM5"},
    "cognito": {"AwsSolutions-APIG3", "AwsSolutions-COG8"},
}


@pytest.mark.parametrize("name", sorted(API_FINDINGS))
def test_each_variant_s_acknowledgments_match_its_findings(name, tmp_path):
    """As tests/test_gates.py checks the default app: with acknowledgments recorded but not applied, the findings
    are exactly those acknowledged, and the API's are the ones its settings explain."""
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        synthesize(tmp_path, **VARIANTS.get(name, {}), **{AUDIT_CONTEXT_KEY: True})
    report = json.loads((tmp_path / "validation-report.json").read_text())
    violations = {
        (v["ruleName"], c["constructPath"])
        for plugin in report["pluginReports"]
        for v in plugin["violations"]
        for c in v["violatingConstructs"]
    }
    acknowledged = _recorded_acknowledgments(tmp_path)
    for ack in acknowledged:
        assert any(_covers(ack, v) for v in violations), f"stale acknowledgment {ack}"
    for violation in violations:
        assert any(_covers(ack, violation) for ack in acknowledged), f"unacknowledged {violation}"
    assert {rule.split("[", 1)[0] for rule, path in violations if "/PredictApi/" in path} == API_FINDINGS[name]


def test_cfn_lint_passes_on_the_variants(variants):
    paths = [str(assembly.template_path(assembly.settings.stack_name("invoker"))) for assembly in variants.values()]
    result = subprocess.run([str(CFN_LINT), *paths], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
