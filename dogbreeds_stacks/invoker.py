"""The invoker Lambda: private subnets, HTTPS-only egress, a private path to the endpoint, least privilege;
and the REST API in front of it (dogbreeds_stacks/api.py), the only way in besides lambda:InvokeFunction.

It takes ``{"url": ...}`` or ``{"image_base64": ...}`` (directly, or inside the REST API's proxy event,
also as a raw image body), fetches URLs itself behind SSRF guards, and calls the endpoint through an
interface VPC endpoint for sagemaker.runtime, so inference traffic never leaves the VPC.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from dogbreeds_stacks.api import PredictApi
from dogbreeds_stacks.constructs.iam import LAMBDA_INTERFACES, Permissions, allow_vpc_interfaces
from dogbreeds_stacks.constructs.logs import log_retention
from dogbreeds_stacks.contract import lambda_environment
from dogbreeds_stacks.foundation import Foundation
from dogbreeds_stacks.nag import acknowledge_wildcards
from dogbreeds_stacks.names import LAMBDA_ALIAS
from dogbreeds_stacks.settings import Settings

LAMBDA_SOURCE = Path(__file__).resolve().parent.parent / "lambda_src"
RUNTIME = lambda_.Runtime.PYTHON_3_14


class InvokerStack(Stack):
    """Lambda (reserved and provisioned concurrency on the `live` alias) that calls one endpoint."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        foundation: Foundation,
        endpoint_arn: str,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        s, f = settings, foundation
        self.function_security_group = self._network(s, f, endpoint_arn)
        log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=s.names.lambda_log_group,
            retention=log_retention(s),
            removal_policy=RemovalPolicy.DESTROY,
        )
        role, permissions = self._role(f, endpoint_arn, log_group)
        self.function = self._function(s, f, role, log_group)
        self.function.node.add_dependency(permissions.policy)
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name=LAMBDA_ALIAS,
            version=self.function.current_version,
            provisioned_concurrent_executions=s.lambda_provisioned_concurrency or None,
        )
        if s.lambda_provisioned_autoscaling:
            scaling = self.alias.add_auto_scaling(
                min_capacity=s.lambda_provisioned_concurrency, max_capacity=s.lambda_provisioned_max
            )
            scaling.scale_on_utilization(utilization_target=s.lambda_provisioned_utilization_target)

        self.api = PredictApi(self, "PredictApi", settings=s, function=self.alias)

        CfnOutput(self, "FunctionName", value=s.names.lambda_function, description="The invoker Lambda function")
        CfnOutput(
            self,
            "AliasArn",
            value=self.alias.function_arn,
            description=f"The function's {LAMBDA_ALIAS} alias (provisioned concurrency), which the API invokes",
        )
        self._api_outputs(s)

    def _api_outputs(self, s: Settings) -> None:
        """What a client needs: the URL, and per api_auth what it authenticates with (dogbreeds predict reads them)."""
        how = {
            "iam": "signed with SigV4 for the service execute-api by an IAM principal allowed execute-api:Invoke",
            "cognito": "with an access token of the user pool (client-credentials grant, scope "
            f"{s.names.api_oauth_scope}) in the Authorization header",
            "api_key": "with the API key (ApiKeyId) in the x-api-key header",
        }[s.api_auth]
        CfnOutput(
            self,
            "PredictUrl",
            value=self.api.url,
            description=f"POST an image (raw bytes, or JSON url / image_base64) here, {how}",
        )
        CfnOutput(self, "RestApiId", value=self.api.api.rest_api_id, description="The REST API in front of the Lambda")
        if s.api_auth == "api_key":
            CfnOutput(
                self,
                "ApiKeyId",
                value=self.api.api_key.key_id,
                description="The client API key: aws apigateway get-api-key --include-value --api-key <id>",
            )
        if s.api_auth == "cognito":
            CfnOutput(self, "UserPoolId", value=self.api.user_pool.user_pool_id, description="The API's client pool")
            CfnOutput(
                self,
                "UserPoolClientId",
                value=self.api.cognito_client.user_pool_client_id,
                description="The app client whose secret gets access tokens (client-credentials grant)",
            )
            CfnOutput(
                self,
                "TokenUrl",
                value=self.api.cognito_domain.base_url() + "/oauth2/token",
                description="The user pool's OAuth 2.0 token endpoint",
            )

    def _network(self, s: Settings, f: Foundation, endpoint_arn: str) -> ec2.SecurityGroup:
        """The function's security group (HTTPS out) and the private sagemaker.runtime endpoint."""
        function_sg = ec2.SecurityGroup(
            self,
            "FunctionSecurityGroup",
            vpc=f.vpc,
            description="Invoker Lambda: HTTPS out only (image URLs and the SageMaker runtime endpoint)",
            allow_all_outbound=False,
        )
        function_sg.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS: image URLs and AWS APIs")
        if s.lambda_allow_http_urls:
            function_sg.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(80), "HTTP image URLs (setting)")

        # Private DNS makes every sagemaker.runtime call in the VPC resolve to this endpoint (the Lambda's, the
        # notebook's, anything in the workload subnets), so it must admit HTTPS from the whole VPC: admitting only
        # the Lambda would make the others' calls time out. What may be invoked through it is the policy's job.
        endpoint_sg = ec2.SecurityGroup(
            self,
            "RuntimeEndpointSecurityGroup",
            vpc=f.vpc,
            description="sagemaker.runtime interface endpoint: HTTPS from the VPC (private DNS applies VPC-wide)",
            allow_all_outbound=False,
        )
        endpoint_sg.add_ingress_rule(
            ec2.Peer.ipv4(s.vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC: the invoker Lambda, the notebook"
        )
        self.runtime_endpoint = ec2.InterfaceVpcEndpoint(
            self,
            "SageMakerRuntimeEndpoint",
            vpc=f.vpc,
            service=ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
            subnets=f.subnets,
            security_groups=[endpoint_sg],
            private_dns_enabled=True,
            open=False,
        )
        # Through this endpoint, only invocations of our endpoint, by principals of this account.
        self.runtime_endpoint.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeOurEndpointOnly",
                principals=[iam.AnyPrincipal()],
                actions=["sagemaker:InvokeEndpoint"],
                resources=[endpoint_arn],
                conditions={"StringEquals": {"aws:PrincipalAccount": Aws.ACCOUNT_ID}},
            )
        )
        return function_sg

    def _role(self, f: Foundation, endpoint_arn: str, log_group: logs.LogGroup) -> tuple[iam.Role, Permissions]:
        """InvokeEndpoint on one endpoint, its own log group, its interfaces in our VPC."""
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Invoker Lambda: InvokeEndpoint on one endpoint, its own logs, its VPC interfaces",
        )
        p = Permissions(self, "Policy", role=role)
        p.allow("InvokeEndpoint", ["sagemaker:InvokeEndpoint"], [endpoint_arn])
        # The log group's ARN (an attribute) ends in ":*": its streams, which Lambda names per execution environment.
        p.allow("OwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [log_group.log_group_arn])
        allow_vpc_interfaces(
            p,
            f.vpc,
            f.subnet_ids,
            [self.function_security_group],
            manage=LAMBDA_INTERFACES,
            describe=("ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"),
            service="Lambda",
        )
        return role, p

    def _function(self, s: Settings, f: Foundation, role: iam.Role, log_group: logs.LogGroup) -> lambda_.Function:
        function = lambda_.Function(
            self,
            "Function",
            function_name=s.names.lambda_function,
            description="Dog-breed classifier: {url} or {image_base64} in, labelled predictions out",
            runtime=RUNTIME,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(LAMBDA_SOURCE), exclude=["__pycache__", "*.pyc"]),
            role=role,
            memory_size=s.lambda_memory_mb,
            timeout=Duration.seconds(s.lambda_timeout_seconds),
            reserved_concurrent_executions=s.lambda_reserved_concurrency,
            vpc=f.vpc,
            vpc_subnets=f.subnets,
            security_groups=[self.function_security_group],
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            environment=lambda_environment(s),
        )
        acknowledge_wildcards(
            role.node.find_child("DefaultPolicy"),
            {"*": "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions"},
        )
        return function
