"""Training as infrastructure: the code asset, the SageMaker execution role, the training pipeline."""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.constructs.code_asset import TrainingCodeAsset
from stacks.constructs.iam import (
    bucket_prefix_statements,
    kms_data_statement,
    kms_grant_statement,
    vpc_network_interface_statements,
)
from stacks.contract import PREFIXES, load_metrics_module
from stacks.foundation import ArtifactBucketRef
from stacks.images import pytorch_image
from stacks.nag import acknowledge, acknowledge_wildcards
from stacks.settings import Settings
from stacks.training_pipeline import PipelineResources, definition, job_name_prefix

# The value the handoff parameter holds until the pipeline has handed off a model. The endpoint
# stack refuses to deploy while it is there (a CloudFormation rule, checked before any resource).
NOT_TRAINED = "none: no model has been trained yet"


def state_machine_name(settings: Settings) -> str:
    return f"{settings.project_name}-training"


def parameter_names(settings: Settings) -> tuple[str, str]:
    """The SSM parameters of the handoff: the model artifact's S3 URI and its metrics (JSON)."""
    return f"/{settings.project_name}/model/data-url", f"/{settings.project_name}/model/metrics"


class TrainingStack(Stack):
    """The training/ code package, the jobs' execution role and the Step Functions training pipeline."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        key: kms.IKey,
        artifacts: ArtifactBucketRef,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        s = settings
        self.code = TrainingCodeAsset(self, "Code")
        subnet_ids = vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids

        self.job_security_group = ec2.SecurityGroup(
            self,
            "JobSecurityGroup",
            vpc=vpc,
            description="SageMaker training jobs: DDP traffic between the instances of one job; egress to AWS APIs",
            allow_all_outbound=True,
        )
        self.job_security_group.add_ingress_rule(
            self.job_security_group,
            ec2.Port.all_tcp(),
            "torchrun rendezvous and NCCL/gloo traffic between the instances of one job",
        )

        training_image = pytorch_image("training", s.training_framework_version, s.training_instance_type)
        tuning_image = pytorch_image("training", s.training_framework_version, s.tuning_instance_type)
        self.execution_role = self._execution_role(
            vpc,
            subnet_ids,
            key,
            artifacts,
            [training_image.repository_arn_in(self), tuning_image.repository_arn_in(self)],
        )

        model_parameter, metrics_parameter = parameter_names(s)
        self.model_parameter = ssm.StringParameter(
            self,
            "ModelDataUrl",
            parameter_name=model_parameter,
            string_value=NOT_TRAINED,
            description="S3 URI of the model the endpoint serves; written by the training pipeline",
        )
        # The pipeline overwrites the value; CloudFormation rewrites it only if these properties
        # change, so none of them may depend on anything that changes (not even tags).
        Tags.of(self.model_parameter).remove("project")

        metrics = load_metrics_module()
        resources = PipelineResources(
            bucket_name=artifacts.bucket_name,
            dataset_prefix=PREFIXES.datasets,
            pretrained_prefix=PREFIXES.pretrained,
            models_prefix=PREFIXES.models,
            checkpoints_prefix=PREFIXES.checkpoints,
            role_arn=self.execution_role.role_arn,
            training_image=training_image.uri_in(self),
            tuning_image=tuning_image.uri_in(self),
            code_uri=self.code.s3_url,
            region=Aws.REGION,
            key_arn=key.key_arn,
            subnet_ids=subnet_ids,
            security_group_ids=[self.job_security_group.security_group_id],
            job_name_prefix=job_name_prefix(s),
            model_parameter=model_parameter,
            metrics_parameter=metrics_parameter,
            metric_definitions=[{"Name": n, "Regex": r} for n, r in metrics.METRIC_REGEXES.items()],
            tuning_objective=metrics.TUNING_OBJECTIVE,
            quality_gate_metric=metrics.QUALITY_GATE_METRIC,
        )
        pipeline_role = self._pipeline_role(artifacts, key, resources)
        log_group = logs.LogGroup(
            self,
            "PipelineLogs",
            log_group_name=f"/aws/vendedlogs/states/{s.project_name}-training",
            retention=s.log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "Pipeline",
            state_machine_name=state_machine_name(s),
            definition_body=sfn.DefinitionBody.from_string(self.to_json_string(definition(s, resources))),
            role=pipeline_role,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
            timeout=Duration.days(5),
        )
        self._acknowledge_service_wildcards(pipeline_role)

        CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(self, "ExecutionRoleArn", value=self.execution_role.role_arn)
        CfnOutput(self, "CodeUri", value=self.code.s3_url)
        CfnOutput(self, "ModelParameterName", value=model_parameter)
        CfnOutput(self, "MetricsParameterName", value=metrics_parameter)

    # --- roles -----------------------------------------------------------------------------------

    def _execution_role(
        self,
        vpc: ec2.IVpc,
        subnet_ids: list[str],
        key: kms.IKey,
        artifacts: ArtifactBucketRef,
        repositories: list[str],
    ) -> iam.Role:
        role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com").with_conditions(
                {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
            description="SageMaker training and tuning jobs of the dog-breed classifier",
        )
        policy = iam.Policy(self, "ExecutionPolicy", roles=[role])
        for statement in [
            *bucket_prefix_statements(
                artifacts,
                read=[PREFIXES.datasets, PREFIXES.pretrained, PREFIXES.checkpoints],
                write=[PREFIXES.models, PREFIXES.checkpoints],
                sid="Artifacts",
            ),
            kms_data_statement(key, sid="UseStackKey"),
            # SageMaker encrypts the job's output with OutputDataConfig.KmsKeyId in the role's name.
            iam.PolicyStatement(sid="EncryptJobOutput", actions=["kms:Encrypt"], resources=[key.key_arn]),
            kms_grant_statement(key, sid="EncryptVolumes"),
            iam.PolicyStatement(
                sid="PullTrainingImage",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=sorted(set(repositories), key=str),
            ),
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(
                sid="JobLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[
                    f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/TrainingJobs:*"
                ],
            ),
            iam.PolicyStatement(
                sid="JobMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            ),
            *vpc_network_interface_statements(vpc, subnet_ids, [self.job_security_group]),
        ]:
            policy.add_statements(statement)
        self.code.grant_read(role)

        partition_region_account = f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}"
        reasons = {
            "*": "ecr:GetAuthorizationToken, cloudwatch:PutMetricData (limited to SageMaker's namespaces by "
            "condition) and the EC2 Describe* calls support no resource-level permissions",
            f"{partition_region_account}:network-interface/*": "the IDs of the interfaces SageMaker creates are "
            "not known before; the ec2:Vpc condition keeps them in our VPC",
            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/TrainingJobs:*": (
                "each job writes its own log streams, named after the job, in SageMaker's log group"
            ),
        }
        for prefix in (PREFIXES.datasets, PREFIXES.pretrained, PREFIXES.checkpoints, PREFIXES.models):
            reasons[artifacts.objects_arn(prefix)] = (
                f"objects under {prefix} are many and named by the data set, the framework or the job; "
                "the statement is limited to that prefix"
            )
        acknowledge_wildcards(policy, reasons)
        return role

    def _pipeline_role(self, artifacts: ArtifactBucketRef, key: kms.IKey, r: PipelineResources) -> iam.Role:
        role = iam.Role(
            self,
            "PipelineRole",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com").with_conditions(
                {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
            description="The training pipeline: starts and watches its own jobs, hands off the model",
        )
        arn = f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}"
        events = f"arn:{Aws.PARTITION}:events:{Aws.REGION}:{Aws.ACCOUNT_ID}:rule"
        ssm_arn = f"arn:{Aws.PARTITION}:ssm:{Aws.REGION}:{Aws.ACCOUNT_ID}:parameter"
        policy = iam.Policy(self, "PipelinePolicy", roles=[role])
        for statement in [
            iam.PolicyStatement(
                sid="RunTrainingJobs",
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                resources=[f"{arn}:training-job/{r.job_name_prefix}-*"],
            ),
            iam.PolicyStatement(
                sid="RunTuningJobs",
                actions=[
                    "sagemaker:CreateHyperParameterTuningJob",
                    "sagemaker:DescribeHyperParameterTuningJob",
                    "sagemaker:StopHyperParameterTuningJob",
                    "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                resources=[f"{arn}:hyper-parameter-tuning-job/{r.job_name_prefix}-*"],
            ),
            iam.PolicyStatement(
                sid="WatchJobsThroughEvents",
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    f"{events}/StepFunctionsGetEventsForSageMakerTrainingJobsRule",
                    f"{events}/StepFunctionsGetEventsForSageMakerTuningJobsRule",
                ],
            ),
            iam.PolicyStatement(
                sid="PassExecutionRole",
                actions=["iam:PassRole"],
                resources=[self.execution_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            ),
            iam.PolicyStatement(
                sid="CheckDataSet",
                actions=["s3:ListBucket"],
                resources=[artifacts.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [r.dataset_prefix, f"{r.pretrained_prefix}*"]}},
            ),
            iam.PolicyStatement(
                sid="HandOffModel",
                actions=["ssm:PutParameter"],
                resources=[f"{ssm_arn}{r.model_parameter}", f"{ssm_arn}{r.metrics_parameter}"],
            ),
            kms_grant_statement(key, sid="EncryptJobVolumes"),
        ]:
            policy.add_statements(statement)
        acknowledge_wildcards(
            policy,
            {
                f"{arn}:training-job/{r.job_name_prefix}-*": "job names are made per execution (and by the tuner "
                "for its trials); the prefix limits the pipeline to its own jobs",
                f"{arn}:hyper-parameter-tuning-job/{r.job_name_prefix}-*": "tuning job names are made per "
                "execution; the prefix limits the pipeline to its own tuning jobs",
            },
        )
        return role

    def _acknowledge_service_wildcards(self, role: iam.Role) -> None:
        """The statements Step Functions itself needs for logging and X-Ray (added by the CDK)."""
        default_policy = role.node.find_child("DefaultPolicy")
        acknowledge(
            default_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "log delivery (logs:CreateLogDelivery and related) and X-Ray (xray:PutTraceSegments and related) "
            "support no resource-level permissions; these are the statements Step Functions documents",
        )
