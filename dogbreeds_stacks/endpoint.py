"""The real-time endpoint (GPU or CPU): model, endpoint config, a stable endpoint, autoscaling, alarms, dashboard.

The endpoint serves a version of the Model Registry group (a model package), so what is served is traceable
to its package and training job: the latest approved version, whose ARN the training stack records in an
SSM parameter that every deploy reads again, or the version the setting endpoint_model_package_arn pins.
The package names the image and model.tar.gz; the serving code travels inside model.tar.gz, under code/
(train.py puts it there): with network isolation on, the container cannot download a code package itself,
which is also why the SageMaker SDK repacks models this way.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, CfnParameter, CfnRule, CfnRuleAssertion, Duration, Fn, Stack
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from dogbreeds_stacks.constructs.iam import (
    Permissions,
    allow_image_pull,
    allow_key_use,
    allow_sagemaker_metrics,
    allow_vpc_interfaces,
    service_role,
)
from dogbreeds_stacks.contract import NOT_APPROVED, PREFIXES, model_environment
from dogbreeds_stacks.foundation import Foundation
from dogbreeds_stacks.images import pytorch_image
from dogbreeds_stacks.instances import has_local_storage, is_gpu
from dogbreeds_stacks.names import LAMBDA_ALIAS
from dogbreeds_stacks.settings import Settings

VARIANT = "AllTraffic"
# Where SageMaker puts an endpoint's instance metrics (GPU, CPU, memory, disk); invocations are in AWS/SageMaker.
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
# The old fleet of a blue/green update serves on for this long while the rollback alarms watch the new one.
BLUE_GREEN_WAIT_SECONDS = 600
# The CloudFormation parameter that reads the approved package's ARN from SSM on every deploy.
PACKAGE_PARAMETER = "ModelPackageArnParameter"
NOT_APPROVED_MESSAGE = (
    "No model package has been approved yet in {group}: list the registered versions with `dogbreeds models`, "
    "approve one with `dogbreeds approve VERSION`, then deploy this stack again (no model yet? run `dogbreeds "
    "train` first). To serve a version without approving it, set endpoint_model_package_arn to its ARN."
)


def served_package(stack: Stack, settings: Settings) -> str:
    """The ARN of the model package the endpoint serves: the pinned one, or the latest approved one.

    The latest approved one comes from an SSM-typed CloudFormation parameter. CloudFormation reads its value
    again for every change set (a UsePreviousValue keeps the SSM name, not the value), and the CDK CLI never
    skips the deploy of a stack with such a parameter, unless the parameter's description holds "[cdk:skip]":
    so a plain `cdk deploy` serves a newly approved package, with no --force. A rule refuses the deploy, before
    any resource changes, while nothing has been approved.
    """
    if settings.endpoint_model_package_arn:
        return settings.endpoint_model_package_arn
    parameter = CfnParameter(
        stack,
        PACKAGE_PARAMETER,
        type="AWS::SSM::Parameter::Value<String>",
        default=settings.names.approved_package_parameter,
        description="SSM parameter holding the ARN of the latest approved model package (recorded on approval; "
        "read again on every deploy)",
    )
    CfnRule(
        stack,
        "ModelIsApproved",
        assertions=[
            CfnRuleAssertion(
                assert_=Fn.condition_not(Fn.condition_equals(parameter.value_as_string, NOT_APPROVED)),
                assert_description=NOT_APPROVED_MESSAGE.format(group=settings.names.model_package_group),
            )
        ],
    )
    return parameter.value_as_string


def dashboard_url(name: str) -> str:
    """The dashboard in the CloudWatch console of the stack's region (the aws partition's console)."""
    return f"https://{Aws.REGION}.console.aws.amazon.com/cloudwatch/home?region={Aws.REGION}#dashboards:name={name}"


class EndpointStack(Stack):
    """SageMaker model (network-isolated, in the VPC), endpoint config, endpoint, scaling, alarms."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, foundation: Foundation, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        s, f = settings, foundation
        self.endpoint_name = s.endpoint_name
        self.endpoint_arn = self.format_arn(service="sagemaker", resource="endpoint", resource_name=s.endpoint_name)
        self.package_arn = served_package(self, s)
        self.model = self._model(s, f, self.package_arn)
        self.config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            # Instance types with NVMe storage encrypt it in hardware and reject a volume key.
            kms_key_id=None if has_local_storage(s.endpoint_instance_type) else f.key.key_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=self.model.attr_model_name,
                    instance_type=s.endpoint_instance_type,
                    initial_instance_count=s.endpoint_min_capacity,
                    initial_variant_weight=1.0,
                )
            ],
        )
        self.alarms = self._alarms(s)
        self.endpoint = self._endpoint(s)
        resource_id, policy = self._autoscaling(s)
        self.dashboard = self._dashboard(s)

        CfnOutput(
            self,
            "EndpointName",
            value=s.endpoint_name,
            description="The real-time endpoint (its name stays across updates)",
        )
        # An instance-type change needs the variant deregistered from autoscaling around the deploy (SageMaker
        # refuses it otherwise, and CloudFormation cannot deregister): `dogbreeds resize-endpoint` does that and
        # registers it again under these names, the ones this stack's resources have.
        CfnOutput(
            self,
            "ScalableTargetResourceId",
            value=resource_id,
            description="Application Auto Scaling resource ID of the endpoint's variant (dogbreeds resize-endpoint)",
        )
        CfnOutput(
            self,
            "ScalingPolicyName",
            value=policy.node.default_child.policy_name,  # a name CDK derives from the construct path
            description="The variant's target-tracking scaling policy (dogbreeds resize-endpoint registers it again)",
        )
        CfnOutput(
            self,
            "DashboardName",
            value=self.dashboard.dashboard_name,
            description="CloudWatch dashboard of the endpoint's instances and traffic and of the invoker Lambda",
        )
        CfnOutput(
            self,
            "DashboardUrl",
            value=dashboard_url(self.dashboard.dashboard_name),
            description="The dashboard in the CloudWatch console",
        )
        # What is served, and the config the endpoint should run: after a deploy, an endpoint whose
        # DescribeEndpoint names another config has rolled the update back (the stack still reports success).
        CfnOutput(
            self,
            "ModelPackageArn",
            value=self.package_arn,
            description="The model package version the endpoint serves (its training job is in the registry)",
        )
        CfnOutput(
            self,
            "EndpointConfigName",
            value=self.config.attr_endpoint_config_name,
            description="The endpoint config this deploy set; an endpoint running another one has rolled back",
        )

    def _model(self, s: Settings, f: Foundation, package_arn: str) -> sagemaker.CfnModel:
        # The package names the image; the role may pull from its repository (the same for CPU and GPU tags).
        image = pytorch_image("inference", s.inference_framework_version, s.endpoint_instance_type)
        security_group = ec2.SecurityGroup(
            self,
            "ModelSecurityGroup",
            vpc=f.vpc,
            description="Endpoint instances: no inbound traffic; HTTPS out for the model download",
            allow_all_outbound=False,
        )
        security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "model artifact download from S3")
        role, permissions = self._model_role(s, f, security_group, image.repository_arn_in(self))
        model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=role.role_arn,
            enable_network_isolation=True,
            # Image and model data come from the package (as the SageMaker SDK's ModelPackage creates a
            # model); a container with ModelPackageName still takes an Environment.
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                model_package_name=package_arn,
                environment=model_environment(s, Aws.REGION),
            ),
            vpc_config=sagemaker.CfnModel.VpcConfigProperty(
                subnets=f.subnet_ids, security_group_ids=[security_group.security_group_id]
            ),
        )
        # The container starts (and reads its artifact) only once its permissions exist.
        model.node.add_dependency(permissions.policy)
        return model

    def _endpoint(self, s: Settings) -> sagemaker.CfnEndpoint:
        return sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=s.endpoint_name,
            endpoint_config_name=self.config.attr_endpoint_config_name,
            # Keep the instance count autoscaling chose when a new model or config is rolled out.
            retain_all_variant_properties=True,
            deployment_config=sagemaker.CfnEndpoint.DeploymentConfigProperty(
                blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                    traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                        type="ALL_AT_ONCE", wait_interval_in_seconds=0
                    ),
                    # The old fleet stays for this long while the alarms watch the new one.
                    termination_wait_in_seconds=BLUE_GREEN_WAIT_SECONDS,
                    maximum_execution_timeout_in_seconds=3600,
                ),
                auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                    alarms=[sagemaker.CfnEndpoint.AlarmProperty(alarm_name=a.alarm_name) for a in self.alarms]
                ),
            ),
        )

    def _autoscaling(self, s: Settings) -> tuple[str, autoscaling.TargetTrackingScalingPolicy]:
        resource_id = f"endpoint/{s.endpoint_name}/variant/{VARIANT}"
        target = autoscaling.ScalableTarget(
            self,
            "ScalableTarget",
            service_namespace=autoscaling.ServiceNamespace.SAGEMAKER,
            resource_id=resource_id,
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=s.endpoint_min_capacity,
            max_capacity=s.endpoint_max_capacity,
        )
        target.node.add_dependency(self.endpoint)
        policy = target.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=s.endpoint_scaling_target,
            predefined_metric=autoscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            scale_in_cooldown=Duration.seconds(s.endpoint_scale_in_cooldown_seconds),
            scale_out_cooldown=Duration.seconds(s.endpoint_scale_out_cooldown_seconds),
        )
        return resource_id, policy

    # --- the model's role --------------------------------------------------------------------

    def _model_role(
        self, s: Settings, f: Foundation, security_group: ec2.ISecurityGroup, repository_arn: str
    ) -> tuple[iam.Role, Permissions]:
        role = service_role(
            self,
            "ModelRole",
            service="sagemaker",
            description="The endpoint's model: read its package and artifact, pull the image, write logs and metrics",
        )
        group = s.names.model_package_group
        p = Permissions(self, "ModelPolicy", role=role)
        p.allow(
            "DescribeModelPackage",
            ["sagemaker:DescribeModelPackage"],
            [p.arn("sagemaker", "model-package", f"{group}/*")],
            wildcard=f"the versions of the group {group} are numbered as they are registered; the model may be "
            "created from any of them, and from no other group",
        )
        p.allow(
            "ReadModelArtifact",
            ["s3:GetObject"],
            [f.artifacts.objects_arn(PREFIXES.models)],
            wildcard=f"the packages point at model artifacts under {PREFIXES.models}, named by the training job; "
            "the endpoint reads the one its package names, and nothing outside that prefix",
        )
        allow_key_use(p, f.key, sid="UseStackKey")
        allow_image_pull(p, [repository_arn], sid="PullInferenceImage")
        p.allow(
            "EndpointLogs",
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            [p.arn("logs", "log-group", f"/aws/sagemaker/Endpoints/{s.endpoint_name}:*", separator=":")],
            wildcard="SageMaker names the log streams after the endpoint's instances, in the endpoint's log group",
        )
        allow_sagemaker_metrics(p, sid="EndpointMetrics")
        allow_vpc_interfaces(p, f.vpc, f.subnet_ids, [security_group])
        return role, p

    # --- alarms and dashboard --------------------------------------------------------------------

    def _metric(
        self, name: str, statistic: str, period_seconds: int = 60, *, namespace: str = "AWS/SageMaker", label: str = ""
    ) -> cloudwatch.Metric:
        """A metric of the variant: invocations in AWS/SageMaker, instance utilization in INSTANCE_NAMESPACE."""
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=name,
            dimensions_map={"EndpointName": self.endpoint_name, "VariantName": VARIANT},
            statistic=statistic,
            period=Duration.seconds(period_seconds),
            label=label or None,
        )

    def _alarms(self, s: Settings) -> list[cloudwatch.Alarm]:
        """5XX errors, model latency and model errors: the alarms that roll a deployment back."""
        common = {"treat_missing_data": cloudwatch.TreatMissingData.NOT_BREACHING, "datapoints_to_alarm": 2}
        return [
            cloudwatch.Alarm(
                self,
                "Errors5xx",
                alarm_name=s.names.endpoint_alarm("5xx-errors"),
                alarm_description="The endpoint answered 5XX to more than 1% of invocations",
                # CloudWatch metric math: IF(TS > S, TS, S) is a documented IF syntax; MAX takes a time series
                # or an array of time series, never a scalar. No invocations in a minute is no error rate: 0.
                metric=cloudwatch.MathExpression(
                    expression="IF(invocations > 0, 100 * errors / invocations, 0)",
                    using_metrics={
                        "errors": self._metric("Invocation5XXErrors", "Sum"),
                        "invocations": self._metric("Invocations", "Sum"),
                    },
                    period=Duration.minutes(1),
                    label="5XX errors (% of invocations)",
                ),
                threshold=1,
                evaluation_periods=3,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                **common,
            ),
            cloudwatch.Alarm(
                self,
                "ModelLatency",
                alarm_name=s.names.endpoint_alarm("model-latency"),
                alarm_description=f"p90 model latency above {s.endpoint_latency_alarm_ms} ms",
                metric=self._metric("ModelLatency", "p90"),
                threshold=s.endpoint_latency_alarm_ms * 1000,  # the metric is in microseconds
                evaluation_periods=3,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                **common,
            ),
            cloudwatch.Alarm(
                self,
                "ModelErrors",
                alarm_name=s.names.endpoint_alarm("model-errors"),
                alarm_description="The model container failed invocations (InvocationModelErrors)",
                metric=self._metric("InvocationModelErrors", "Sum"),
                threshold=0,
                evaluation_periods=3,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                **common,
            ),
        ]

    def _dashboard(self, s: Settings) -> cloudwatch.Dashboard:
        """One screen for serving: the endpoint's traffic, latency and errors, its instances (GPU, CPU, memory),
        the rollback alarms, then the invoker Lambda. Utilization is per instance, averaged over the variant's
        instances (the busiest one beside it for the GPU); CPU and GPU utilization add up the instance's vCPUs and
        GPUs (200% is two of them busy). A CPU instance type has no GPU metrics: its dashboard has no GPU graphs."""
        function = s.names.lambda_function  # known here, so the dashboard needs no reference to its stack

        def lambda_metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/Lambda",
                metric_name=name,
                dimensions_map={"FunctionName": function, "Resource": f"{function}:{LAMBDA_ALIAS}"},
                statistic=statistic,
                period=Duration.minutes(1),
            )

        def instance(name: str, statistic: str = "Average", label: str = "") -> cloudwatch.Metric:
            return self._metric(name, statistic, namespace=INSTANCE_NAMESPACE, label=label)

        def graph(
            title: str, left: list[cloudwatch.IMetric], right: list[cloudwatch.IMetric] = (), unit: str = ""
        ) -> cloudwatch.GraphWidget:
            axis = cloudwatch.YAxisProps(label=unit, show_units=False) if unit else None
            return cloudwatch.GraphWidget(title=title, left=left, right=list(right), left_y_axis=axis, width=6)

        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=s.names.dashboard)
        dashboard.add_widgets(
            graph(
                "Endpoint invocations (per minute)",
                [self._metric("Invocations", "Sum"), self._metric("InvocationsPerInstance", "Sum")],
            ),
            graph(
                "Model latency (microseconds)",
                [self._metric("ModelLatency", "p50"), self._metric("ModelLatency", "p90")],
                unit="µs",
            ),
            graph(
                "Overhead latency (microseconds)",
                [self._metric("OverheadLatency", "p50"), self._metric("OverheadLatency", "p90")],
                unit="µs",
            ),
            graph(
                "Endpoint errors (per minute)",
                [
                    self._metric("Invocation4XXErrors", "Sum"),
                    self._metric("Invocation5XXErrors", "Sum"),
                    self._metric("InvocationModelErrors", "Sum"),
                ],
            ),
        )
        gpu_graphs = [
            graph(
                "GPU utilization (% per instance, 100 per GPU)",
                [instance("GPUUtilization", label="average"), instance("GPUUtilization", "Maximum", "busiest")],
                unit="%",
            ),
            graph(
                "GPU memory (% per instance, 100 per GPU)",
                [
                    instance("GPUMemoryUtilization", label="average"),
                    instance("GPUMemoryUtilization", "Maximum", "busiest"),
                ],
                unit="%",
            ),
        ]
        dashboard.add_widgets(
            *(gpu_graphs if is_gpu(s.endpoint_instance_type) else []),
            graph(
                "CPU, memory and disk (% per instance; CPU 100 per vCPU)",
                [instance("CPUUtilization"), instance("MemoryUtilization"), instance("DiskUtilization")],
                unit="%",
            ),
            graph(
                "Endpoint concurrency",
                [self._metric("ConcurrentRequestsPerModel", "Maximum", label="concurrent requests per model")],
            ),
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Rollback alarms", alarms=self.alarms, width=24, height=3),
        )
        dashboard.add_widgets(
            graph(
                "Lambda invocations and errors", [lambda_metric("Invocations", "Sum"), lambda_metric("Errors", "Sum")]
            ),
            graph("Lambda throttles", [lambda_metric("Throttles", "Sum")]),
            graph("Lambda duration (ms)", [lambda_metric("Duration", "p50"), lambda_metric("Duration", "p90")]),
            graph(
                "Lambda concurrency",
                [lambda_metric("ConcurrentExecutions", "Maximum")],
                right=[lambda_metric("ProvisionedConcurrencyUtilization", "Maximum")],
            ),
        )
        return dashboard
