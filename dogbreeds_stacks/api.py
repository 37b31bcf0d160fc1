"""The front door: a regional REST API, ``POST /predict``, in front of the Lambda's ``live`` alias.

- Authentication by ``api_auth``: IAM (SigV4, the default), a Cognito user pool's access tokens
  (client-credentials grant), or API keys of a usage plan. No other method, no CORS preflight: there is
  no unauthenticated route.
- Throttling: the stage's rate and burst (``Settings.api_rate_limit`` / ``api_burst_limit``), which API
  Gateway applies as best effort; the Lambda's reserved concurrency stays the hard cap.
- Requests: binary media types, so that a raw image body reaches the Lambda base64-encoded as well as a
  JSON ``{"url": ...}`` or ``{"image_base64": ...}``; a request model validates JSON bodies; sizes follow
  dogbreeds_stacks/api_contract.py.
- Every answer API Gateway makes itself has the Lambda's error shape (``{"error", "request_id"}``).
- Access logs as JSON lines in a log group with the app's retention; execution logs (errors only, never
  bodies) in the group API Gateway names after the API, created here with the same retention; X-Ray.
- API Gateway writes logs through one role per account and region (its account settings), which a new
  account lacks and without which the stage cannot be created with logging: ``api_cloudwatch_role`` sets
  it (kept when the stack is deleted: other APIs of the account may rely on it).
- Optionally (``api_waf``), an AWS WAF web ACL: a rate limit per client IP, AWS managed rules for IP
  reputation, known bad inputs and common attacks (its 8 KB body-size rule only counts: images are larger).
"""

from __future__ import annotations

import json

from aws_cdk import Aws, Duration, Fn, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from dogbreeds_stacks.api_contract import (
    ACCESS_LOG_FIELDS,
    BINARY_MEDIA_TYPES,
    GATEWAY_ERROR_TEMPLATE,
    JSON_MEDIA_TYPE,
    RESOURCE_PATH,
    TOP_K_PARAMETER,
    request_schema,
)
from dogbreeds_stacks.constructs.iam import Permissions
from dogbreeds_stacks.constructs.logs import log_retention
from dogbreeds_stacks.nag import acknowledge
from dogbreeds_stacks.names import API_PATH, API_STAGE
from dogbreeds_stacks.settings import Settings

# What API Gateway does with its account-level role: create the execution-log groups (named after each API) and
# write to them and to each stage's access-log group. AmazonAPIGatewayPushToCloudWatchLogs grants the same on "*".
API_GATEWAY_LOG_ACTIONS = (
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:DescribeLogGroups",
    "logs:DescribeLogStreams",
    "logs:PutLogEvents",
)
# The common rule set's rule that blocks bodies over 8 KB: every image is larger, so it only counts.
WAF_BODY_SIZE_RULE = "SizeRestrictions_BODY"
WAF_RATE_WINDOW_SECONDS = 300
WAF_MANAGED_RULE_GROUPS = (
    "AWSManagedRulesAmazonIpReputationList",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesCommonRuleSet",
)
# The JSON schema keywords request_schema() uses, and the CDK's names for them.
_SCHEMA_KEYWORDS = {
    "$schema": "schema",
    "title": "title",
    "description": "description",
    "type": "type",
    "properties": "properties",
    "additionalProperties": "additional_properties",
    "oneOf": "one_of",
    "required": "required",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minimum": "minimum",
    "maximum": "maximum",
}
_DRAFT_4 = "http://json-schema.org/draft-04/schema#"


class PredictApi(Construct):
    """The REST API with its one method, its logs, its authentication and, optionally, its web ACL."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, function: lambda_.IFunction):
        super().__init__(scope, construct_id)
        s = settings
        self.settings = s
        account_setting = self._account_logging_role() if s.api_cloudwatch_role else None
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            log_group_name=s.names.api_access_log_group,
            retention=log_retention(s),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=s.names.api,
            description=f"Dog-breed classifier: POST {RESOURCE_PATH} an image or its URL (auth: {s.api_auth})",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=list(BINARY_MEDIA_TYPES),
            cloud_watch_role=False,  # the account-level role is ours (api_cloudwatch_role), with an inline policy
            fail_on_warnings=True,
            api_key_source_type=apigw.ApiKeySourceType.HEADER if s.api_auth == "api_key" else None,
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE,
                throttling_rate_limit=s.api_rate_limit,
                throttling_burst_limit=s.api_burst_limit,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # full request logging would write images and tokens into the logs
                tracing_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
            ),
        )
        self.api.node.try_remove_child("Endpoint")  # the CDK's own URL output: the stack's PredictUrl replaces it
        self.stage = self.api.deployment_stage
        # API Gateway would create this group itself on the first error, with no retention.
        execution_logs = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=s.names.api_execution_log_group(self.api.rest_api_id),
            retention=log_retention(s),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.stage.node.add_dependency(execution_logs)
        if account_setting is not None:
            self.stage.node.add_dependency(account_setting)
        self._gateway_responses()
        self.method = self._predict_method(function)
        self.web_acl = self._web_acl() if s.api_waf else None
        if self.web_acl is None:
            acknowledge(
                self.stage,
                "AwsSolutions-APIG3",
                "AWS WAF is optional (api_waf=true adds a web ACL with managed rules and a per-IP rate limit, "
                "priced by dogbreeds cost); without it, the API's own authentication and throttling apply",
            )
        self.url = self.api.url_for_path(RESOURCE_PATH)

    # --- the method --------------------------------------------------------------------------------

    def _predict_method(self, function: lambda_.IFunction) -> apigw.Method:
        s = self.settings
        integration = apigw.LambdaIntegration(
            function,
            proxy=True,
            allow_test_invoke=False,  # the permission is for this stage's POST /predict only
            timeout=Duration.seconds(s.api_integration_timeout_seconds),
        )
        model = self.api.add_model(
            "PredictRequest",
            model_name="PredictRequest",
            content_type=JSON_MEDIA_TYPE,
            schema=json_schema(request_schema()),
            description="A JSON body: exactly one of url and image_base64, and an optional top_k",
        )
        validator = self.api.add_request_validator(
            "Validator",
            request_validator_name=f"{s.names.api}-body-and-parameters",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        method = self.api.root.add_resource(API_PATH).add_method(
            "POST",
            integration,
            request_models={JSON_MEDIA_TYPE: model},
            request_validator=validator,
            request_parameters={f"method.request.querystring.{TOP_K_PARAMETER}": False},
            **self._authorization(),
        )
        reasons = {
            "iam": (
                "AwsSolutions-COG4",
                "api_auth=iam: callers sign requests with SigV4 and IAM decides (execute-api:Invoke on this method); "
                "a Cognito user pool authorizer is the api_auth=cognito choice",
            ),
            "api_key": (
                "AwsSolutions-COG4",
                "api_auth=api_key: clients present an API key of the usage plan, the setting's documented trade-off "
                "for trusted clients; api_auth=iam or cognito authenticate callers",
            ),
        }
        if s.api_auth in reasons:
            acknowledge(method, *reasons[s.api_auth])
        if s.api_auth == "api_key":
            acknowledge(
                method,
                "AwsSolutions-APIG4",
                "api_auth=api_key: the method requires an API key of the usage plan instead of an authorizer, the "
                "setting's documented trade-off for trusted clients; api_auth=iam (default) or cognito authorize",
            )
        return method

    def _authorization(self) -> dict:
        s = self.settings
        if s.api_auth == "iam":
            return {"authorization_type": apigw.AuthorizationType.IAM}
        if s.api_auth == "api_key":
            self._usage_plan()
            return {"authorization_type": apigw.AuthorizationType.NONE, "api_key_required": True}
        authorizer = self._cognito_authorizer()
        return {
            "authorization_type": apigw.AuthorizationType.COGNITO,
            "authorizer": authorizer,
            "authorization_scopes": [s.names.api_oauth_scope],
        }

    def _usage_plan(self) -> None:
        s = self.settings
        self.api_key = self.api.add_api_key(
            "ClientKey", api_key_name=s.names.api_key, description="Dog-breed classifier: a client of POST /predict"
        )
        plan = self.api.add_usage_plan(
            "UsagePlan",
            name=s.names.api_usage_plan,
            description="Dog-breed classifier clients: the stage's throttle, per key",
            throttle=apigw.ThrottleSettings(rate_limit=s.api_rate_limit, burst_limit=s.api_burst_limit),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.stage)],
        )
        plan.add_api_key(self.api_key)

    def _cognito_authorizer(self) -> apigw.CognitoUserPoolsAuthorizer:
        """A user pool for machine clients: each client has an app client with a secret and gets access tokens
        for the scope <project>/predict with the client-credentials grant; no user signs in."""
        s = self.settings
        pool = cognito.UserPool(
            self,
            "Clients",
            user_pool_name=s.names.api_user_pool,
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(username=True),
            password_policy=cognito.PasswordPolicy(
                min_length=14, require_digits=True, require_lowercase=True, require_uppercase=True, require_symbols=True
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.NONE,
            feature_plan=cognito.FeaturePlan.ESSENTIALS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        acknowledge(
            pool,
            "AwsSolutions-COG8",
            "the Plus plan's threat protection watches user sign-ins; this pool has none, only app clients that "
            "use the client-credentials grant",
        )
        scope = cognito.ResourceServerScope(scope_name=API_PATH, scope_description="POST /predict")
        server = pool.add_resource_server("Api", identifier=s.project_name, scopes=[scope])
        # Domain prefixes are unique across AWS in a region: the account's ID makes this one the account's.
        self.cognito_domain = pool.add_domain(
            "Domain",
            cognito_domain=cognito.CognitoDomainOptions(domain_prefix=Fn.join("-", [s.project_name, Aws.ACCOUNT_ID])),
        )
        self.cognito_client = pool.add_client(
            "Client",
            user_pool_client_name=f"{s.project_name}-client",
            generate_secret=True,
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(client_credentials=True),
                scopes=[cognito.OAuthScope.resource_server(server, scope)],
            ),
            access_token_validity=Duration.hours(1),
            prevent_user_existence_errors=True,
        )
        self.user_pool = pool
        return apigw.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[pool], authorizer_name=f"{s.project_name}-clients"
        )

    # --- API Gateway's own answers --------------------------------------------------------------------

    def _gateway_responses(self) -> None:
        headers = {"Content-Type": "'application/json'", "Cache-Control": "'no-store'"}
        for construct_id, response_type, extra in (
            ("Default4xx", apigw.ResponseType.DEFAULT_4_XX, {}),
            ("Default5xx", apigw.ResponseType.DEFAULT_5_XX, {}),
            ("Throttled", apigw.ResponseType.THROTTLED, {"Retry-After": "'1'"}),
        ):
            self.api.add_gateway_response(
                construct_id,
                type=response_type,
                response_headers={**headers, **extra},
                templates={JSON_MEDIA_TYPE: GATEWAY_ERROR_TEMPLATE},
            )

    # --- the account's logging role ---------------------------------------------------------------------

    def _account_logging_role(self) -> apigw.CfnAccount:
        """API Gateway's CloudWatch Logs role for this account and region, kept when the stack is deleted."""
        role = iam.Role(
            self,
            "AccountLoggingRole",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="API Gateway's account-level role: write every API's logs of this region to CloudWatch Logs",
        )
        permissions = Permissions(self, "AccountLoggingPolicy", role=role)
        permissions.allow(
            "WriteApiLogs",
            list(API_GATEWAY_LOG_ACTIONS),
            [permissions.arn("logs", "log-group", "*", separator=":")],
            wildcard="API Gateway's logging role is one per account and region, used for every REST API there: "
            "execution-log groups are named after each API's generated ID and access-log groups are each stage's "
            "choice, so it covers the log groups of this account and region (AWS's managed policy grants '*')",
        )
        account = apigw.CfnAccount(self, "AccountSetting", cloud_watch_role_arn=role.role_arn)
        account.node.add_dependency(permissions.policy)  # API Gateway checks the role's permissions when it is set
        for resource in (role, permissions.policy, account):
            resource.apply_removal_policy(RemovalPolicy.RETAIN)
        return account

    # --- WAF -------------------------------------------------------------------------------------------------

    def _web_acl(self) -> wafv2.CfnWebACL:
        s = self.settings
        name = s.names.web_acl

        def visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=f"{name}-{metric}", sampled_requests_enabled=True
            )

        rate_limit = wafv2.CfnWebACL.RuleProperty(
            name="RateLimitPerIp",
            priority=0,
            action=wafv2.CfnWebACL.RuleActionProperty(
                block=wafv2.CfnWebACL.BlockActionProperty(
                    custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                        response_code=429,
                        custom_response_body_key="TooManyRequests",
                        response_headers=[wafv2.CfnWebACL.CustomHTTPHeaderProperty(name="Retry-After", value="60")],
                    )
                )
            ),
            statement=wafv2.CfnWebACL.StatementProperty(
                rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    limit=s.api_waf_rate_limit, aggregate_key_type="IP", evaluation_window_sec=WAF_RATE_WINDOW_SECONDS
                )
            ),
            visibility_config=visibility("rate-limit-per-ip"),
        )
        managed = [
            wafv2.CfnWebACL.RuleProperty(
                name=group,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=group,
                        rule_action_overrides=[
                            wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name=WAF_BODY_SIZE_RULE,
                                action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}),
                            )
                        ]
                        if group == "AWSManagedRulesCommonRuleSet"
                        else None,
                    )
                ),
                visibility_config=visibility(group),
            )
            for priority, group in enumerate(WAF_MANAGED_RULE_GROUPS, start=1)
        ]
        acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=name,
            description="Dog-breed classifier API: per-IP rate limit, AWS managed rules",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            rules=[rate_limit, *managed],
            custom_response_bodies={
                "TooManyRequests": wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=json.dumps({"error": "too many requests from this address; retry in a minute"}),
                )
            },
            visibility_config=visibility("all"),
        )
        wafv2.CfnWebACLAssociation(
            self, "WebAclAssociation", resource_arn=self.stage.stage_arn, web_acl_arn=acl.attr_arn
        )
        return acl


def json_schema(schema: dict) -> apigw.JsonSchema:
    """The CDK's JsonSchema for a draft-4 schema written as a dict (only the keywords request_schema uses)."""
    arguments: dict[str, object] = {}
    for keyword, value in schema.items():
        name = _SCHEMA_KEYWORDS[keyword]
        if keyword == "$schema":
            if value != _DRAFT_4:
                raise ValueError(f"API Gateway models are JSON schema draft 4, not {value}")
            value = apigw.JsonSchemaVersion.DRAFT4
        elif keyword == "type":
            value = apigw.JsonSchemaType[value.upper()]
        elif keyword == "properties":
            value = {key: json_schema(item) for key, item in value.items()}
        elif keyword == "oneOf":
            value = [json_schema(item) for item in value]
        elif keyword == "additionalProperties" and isinstance(value, dict):
            value = json_schema(value)
        arguments[name] = value
    return apigw.JsonSchema(**arguments)
