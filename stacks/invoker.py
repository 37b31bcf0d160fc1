"""The invoker Lambda: private subnets, HTTPS-only egress, a private path to the endpoint, least privilege.

It takes ``{"url": ...}`` or ``{"image_base64": ...}`` (also inside an API Gateway or function URL
proxy event), fetches URLs itself behind SSRF guards, and calls the endpoint through an interface
VPC endpoint for sagemaker.runtime, so inference traffic never leaves the VPC.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.endpoint import lambda_function_name
from stacks.nag import acknowledge_wildcards
from stacks.settings import Settings

LAMBDA_SOURCE = Path(__file__).resolve().parent.parent / "lambda_src"
ALIAS = "live"
RUNTIME = lambda_.Runtime.PYTHON_3_14


class InvokerStack(Stack):
    """Lambda (reserved and provisioned concurrency on the `live` alias) that calls one endpoint."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        endpoint_name: str,
        endpoint_arn: str,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        s = settings
        name = lambda_function_name(s)

        function_sg = ec2.SecurityGroup(
            self,
            "FunctionSecurityGroup",
            vpc=vpc,
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
            vpc=vpc,
            description="sagemaker.runtime interface endpoint: HTTPS from the VPC (private DNS applies VPC-wide)",
            allow_all_outbound=False,
        )
        endpoint_sg.add_ingress_rule(
            ec2.Peer.ipv4(s.vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC: the invoker Lambda, the notebook"
        )
        self.runtime_endpoint = ec2.InterfaceVpcEndpoint(
            self,
            "SageMakerRuntimeEndpoint",
            vpc=vpc,
            service=ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
            subnets=subnets,
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

        log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/lambda/{name}",
            retention=s.log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Invoker Lambda: InvokeEndpoint on one endpoint, its own logs, its VPC interfaces",
        )
        arn = f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}"
        policy = iam.Policy(
            self,
            "Policy",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    sid="InvokeEndpoint", actions=["sagemaker:InvokeEndpoint"], resources=[endpoint_arn]
                ),
                # The log group's ARN ends in ":*": its streams, named by Lambda per execution environment.
                iam.PolicyStatement(
                    sid="OwnLogs",
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    sid="CreateInterfacesInOurSubnets",
                    actions=["ec2:CreateNetworkInterface"],
                    resources=[
                        *(f"{arn}:subnet/{i}" for i in vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids),
                        f"{arn}:security-group/{function_sg.security_group_id}",
                        f"{arn}:network-interface/*",
                    ],
                ),
                iam.PolicyStatement(
                    sid="ManageInterfacesInOurVpc",
                    actions=[
                        "ec2:DeleteNetworkInterface",
                        "ec2:AssignPrivateIpAddresses",
                        "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=[f"{arn}:network-interface/*"],
                    conditions={"ArnEquals": {"ec2:Vpc": f"{arn}:vpc/{vpc.vpc_id}"}},
                ),
                iam.PolicyStatement(
                    sid="DescribeInterfaces",
                    actions=["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"],
                    resources=["*"],
                ),
            ],
        )
        acknowledge_wildcards(
            policy,
            {
                "*": "ec2:DescribeNetworkInterfaces and ec2:DescribeSubnets support no resource-level permissions",
                f"{arn}:network-interface/*": "Lambda creates the function's interfaces with IDs not known "
                "before; creation also names our subnets and security group, and the ec2:Vpc condition keeps "
                "the other actions in our VPC",
            },
        )

        self.function = lambda_.Function(
            self,
            "Function",
            function_name=name,
            description="Dog-breed classifier: {url} or {image_base64} in, labelled predictions out",
            runtime=RUNTIME,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(LAMBDA_SOURCE), exclude=["__pycache__", "*.pyc"]),
            role=role,
            memory_size=s.lambda_memory_mb,
            timeout=Duration.seconds(s.lambda_timeout_seconds),
            reserved_concurrent_executions=s.lambda_reserved_concurrency,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[function_sg],
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            environment={
                "ENDPOINT_NAME": endpoint_name,
                "MAX_IMAGE_BYTES": str(s.lambda_max_image_mb * 1024 * 1024),
                "ALLOW_HTTP_URLS": str(s.lambda_allow_http_urls).lower(),
                "FETCH_TIMEOUT_SECONDS": str(s.lambda_fetch_timeout_seconds),
                "ENDPOINT_TIMEOUT_SECONDS": str(s.lambda_endpoint_timeout_seconds),
                "ENDPOINT_MAX_ATTEMPTS": str(s.lambda_endpoint_max_attempts),
            },
        )
        self.function.node.add_dependency(policy)
        acknowledge_wildcards(
            role.node.find_child("DefaultPolicy"),
            {"*": "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions"},
        )

        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name=ALIAS,
            version=self.function.current_version,
            provisioned_concurrent_executions=s.lambda_provisioned_concurrency or None,
        )
        if s.lambda_provisioned_autoscaling:
            scaling = self.alias.add_auto_scaling(
                min_capacity=s.lambda_provisioned_concurrency, max_capacity=s.lambda_provisioned_max
            )
            scaling.scale_on_utilization(utilization_target=s.lambda_provisioned_utilization_target)

        CfnOutput(self, "FunctionName", value=name)
        CfnOutput(self, "AliasArn", value=self.alias.function_arn)
