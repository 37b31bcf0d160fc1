"""Training as infrastructure: the code asset, the SageMaker execution role, the training pipeline, and the
model registry it registers every model in (with the approval recorder that says what is served)."""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from dogbreeds_stacks.approval import ApprovalRecorder, RecorderResources
from dogbreeds_stacks.constructs.code_asset import TrainingCodeAsset
from dogbreeds_stacks.constructs.iam import (
    Permissions,
    allow_bucket_prefixes,
    allow_image_pull,
    allow_key_grants,
    allow_key_use,
    allow_sagemaker_metrics,
    allow_vpc_interfaces,
    service_role,
)
from dogbreeds_stacks.constructs.logs import log_retention
from dogbreeds_stacks.contract import NOT_APPROVED, PREFIXES, load_metrics_module, model_environment
from dogbreeds_stacks.foundation import Foundation
from dogbreeds_stacks.images import pytorch_image
from dogbreeds_stacks.instances import family
from dogbreeds_stacks.nag import acknowledge
from dogbreeds_stacks.settings import Settings, instance_types
from dogbreeds_stacks.training_pipeline import MODEL_QUALITY_FILE, PipelineResources, definition


class TrainingStack(Stack):
    """The training/ code package, the jobs' execution role, the Step Functions training pipeline, the model
    package group it registers every model in, and the approval recorder."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, foundation: Foundation, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        s, f, names = settings, foundation, settings.names
        self.code = TrainingCodeAsset(self, "Code")
        self.job_security_group = ec2.SecurityGroup(
            self,
            "JobSecurityGroup",
            vpc=f.vpc,
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
            f, [training_image.repository_arn_in(self), tuning_image.repository_arn_in(self)]
        )
        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=names.model_package_group,
            model_package_group_description=(
                "Every model the training pipeline trained, with its metrics and lineage: Approved, "
                "PendingManualApproval or Rejected by the quality gate. The latest Approved one is served."
            ),
        )
        # The registry is the models' history, kept like the artifact bucket that holds their files. Its name and
        # description are create-only: a change would replace a named resource, which CloudFormation refuses.
        self.model_package_group.apply_removal_policy(RemovalPolicy.RETAIN if s.retain_data else RemovalPolicy.DESTROY)
        self.approved_package = ssm.StringParameter(
            self,
            "ApprovedPackage",
            parameter_name=names.approved_package_parameter,
            string_value=NOT_APPROVED,
            description="ARN of the latest Approved model package of the group: what the endpoint serves; "
            "written by the approval recorder",
        )
        # The recorder overwrites the value; CloudFormation rewrites it only if these properties
        # change, so none of them may depend on anything that changes (not even tags).
        Tags.of(self.approved_package).remove("project")

        metrics = load_metrics_module()
        inference_image = pytorch_image("inference", s.inference_framework_version, s.endpoint_instance_type)
        resources = PipelineResources(
            bucket_name=f.artifacts.bucket_name,
            dataset_prefix=PREFIXES.datasets,
            pretrained_prefix=PREFIXES.pretrained,
            models_prefix=PREFIXES.models,
            checkpoints_prefix=PREFIXES.checkpoints,
            features_prefix=PREFIXES.features,
            role_arn=self.execution_role.role_arn,
            training_image=training_image.uri_in(self),
            tuning_image=tuning_image.uri_in(self),
            code_uri=self.code.s3_url,
            region=Aws.REGION,
            key_arn=f.key.key_arn,
            subnet_ids=f.subnet_ids,
            security_group_ids=[self.job_security_group.security_group_id],
            job_name_prefix=names.job_name_prefix,
            model_package_group=names.model_package_group,
            inference_image=inference_image.uri_in(self),
            model_environment=model_environment(s, Aws.REGION),
            inference_instance_types=serving_instance_types(s.endpoint_instance_type),
            metric_definitions=[{"Name": n, "Regex": r} for n, r in metrics.METRIC_REGEXES.items()],
            tuning_objective=metrics.TUNING_OBJECTIVE,
            quality_gate_metric=metrics.QUALITY_GATE_METRIC,
        )
        self.state_machine = self._state_machine(s, f, resources)
        self.state_machine.node.add_dependency(self.model_package_group)
        self.approval_recorder = ApprovalRecorder(
            self,
            "ApprovalRecorder",
            settings=s,
            resources=RecorderResources(
                model_package_group=names.model_package_group,
                parameter_name=names.approved_package_parameter,
                not_approved=NOT_APPROVED,
            ),
            parameter_arn=self.approved_package.parameter_arn,
        )
        self.approval_recorder.node.add_dependency(self.model_package_group)

        CfnOutput(
            self,
            "StateMachineArn",
            value=self.state_machine.state_machine_arn,
            description="The training pipeline (tuning, DDP training, quality gate, registry): dogbreeds train",
        )
        CfnOutput(
            self,
            "ExecutionRoleArn",
            value=self.execution_role.role_arn,
            description="Role of the SageMaker training and tuning jobs",
        )
        CfnOutput(self, "CodeUri", value=self.code.s3_url, description="S3 URI of the training/ code package (tar.gz)")
        CfnOutput(
            self,
            "ModelPackageGroupName",
            value=names.model_package_group,
            description="Model Registry group: one version per trained model (dogbreeds models)",
        )
        CfnOutput(
            self,
            "ApprovedPackageParameterName",
            value=names.approved_package_parameter,
            description="SSM parameter holding the latest approved model package's ARN (the endpoint serves it)",
        )

    def _state_machine(self, s: Settings, f: Foundation, resources: PipelineResources) -> sfn.StateMachine:
        log_group = logs.LogGroup(
            self,
            "PipelineLogs",
            log_group_name=s.names.state_machine_log_group,
            retention=log_retention(s),
            removal_policy=RemovalPolicy.DESTROY,
        )
        role = self._pipeline_role(f, resources)
        machine = sfn.StateMachine(
            self,
            "Pipeline",
            state_machine_name=s.names.state_machine,
            definition_body=sfn.DefinitionBody.from_string(self.to_json_string(definition(s, resources))),
            role=role,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
            timeout=Duration.days(5),
        )
        # The statements Step Functions itself needs for logging and X-Ray (added by the CDK).
        acknowledge(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::*]",
            "log delivery (logs:CreateLogDelivery and related) and X-Ray (xray:PutTraceSegments and related) "
            "support no resource-level permissions; these are the statements Step Functions documents",
        )
        return machine

    # --- roles -----------------------------------------------------------------------------------

    def _execution_role(self, f: Foundation, repositories: list[str]) -> iam.Role:
        role = service_role(
            self,
            "ExecutionRole",
            service="sagemaker",
            description="SageMaker training and tuning jobs of the dog-breed classifier",
        )
        p = Permissions(self, "ExecutionPolicy", role=role)
        allow_bucket_prefixes(
            p,
            f.artifacts,
            # features/: the extraction step writes the shared features, the trials read them (and write them
            # where the step did not: each key's content is the same whoever writes it).
            read=[PREFIXES.datasets, PREFIXES.pretrained, PREFIXES.checkpoints, PREFIXES.features],
            write=[PREFIXES.models, PREFIXES.checkpoints, PREFIXES.features],
            sid="Artifacts",
        )
        allow_key_use(p, f.key, sid="UseStackKey")
        # SageMaker encrypts the job's output with OutputDataConfig.KmsKeyId in the role's name.
        p.allow("EncryptJobOutput", ["kms:Encrypt"], [f.key.key_arn])
        allow_key_grants(p, f.key, sid="EncryptVolumes")
        allow_image_pull(p, repositories, sid="PullTrainingImage")
        p.allow(
            "JobLogs",
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            [p.arn("logs", "log-group", "/aws/sagemaker/TrainingJobs:*", separator=":")],
            wildcard="each job writes its own log streams, named after the job, in SageMaker's log group",
        )
        allow_sagemaker_metrics(p, sid="JobMetrics")
        allow_vpc_interfaces(p, f.vpc, f.subnet_ids, [self.job_security_group])
        self.code.grant_read(role)
        return role

    def _pipeline_role(self, f: Foundation, r: PipelineResources) -> iam.Role:
        role = service_role(
            self,
            "PipelineRole",
            service="states",
            description="The training pipeline: starts and watches its own jobs, registers the model",
        )
        p = Permissions(self, "PipelinePolicy", role=role)
        p.allow(
            "RunTrainingJobs",
            [
                "sagemaker:CreateTrainingJob",
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopTrainingJob",
                "sagemaker:AddTags",
                "sagemaker:ListTags",
            ],
            [p.arn("sagemaker", "training-job", f"{r.job_name_prefix}-*")],
            wildcard="job names are made per execution (and by the tuner for its trials); the prefix limits the "
            "pipeline to its own jobs",
        )
        p.allow(
            "RunTuningJobs",
            [
                "sagemaker:CreateHyperParameterTuningJob",
                "sagemaker:DescribeHyperParameterTuningJob",
                "sagemaker:StopHyperParameterTuningJob",
                "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
                "sagemaker:AddTags",
                "sagemaker:ListTags",
            ],
            [p.arn("sagemaker", "hyper-parameter-tuning-job", f"{r.job_name_prefix}-*")],
            wildcard="tuning job names are made per execution; the prefix limits the pipeline to its own tuning jobs",
        )
        p.allow(
            "WatchJobsThroughEvents",
            ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            [
                p.arn("events", "rule", "StepFunctionsGetEventsForSageMakerTrainingJobsRule"),
                p.arn("events", "rule", "StepFunctionsGetEventsForSageMakerTuningJobsRule"),
            ],
        )
        p.allow(
            "PassExecutionRole",
            ["iam:PassRole"],
            [self.execution_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )
        p.allow(
            "CheckDataSet",
            ["s3:ListBucket"],
            [f.artifacts.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [r.dataset_prefix, f"{r.pretrained_prefix}*"]}},
        )
        p.allow(
            "RecordModelMetrics",
            ["s3:PutObject"],
            [f"{f.artifacts.bucket_arn}/{r.models_prefix}{r.job_name_prefix}-train-*/{MODEL_QUALITY_FILE}"],
            wildcard="each model's metrics object sits beside its training job's output, in a folder named after "
            "the job (made per execution); the statement is limited to that one file name",
        )
        p.allow(
            "EncryptModelMetrics",
            ["kms:GenerateDataKey"],
            [f.key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{Aws.REGION}.amazonaws.com"}},
        )
        p.allow(
            "RegisterModel",
            # AddTags: the version is tagged with the project as it is created.
            ["sagemaker:CreateModelPackage", "sagemaker:AddTags"],
            [p.arn("sagemaker", "model-package", f"{r.model_package_group}/*")],
            wildcard="SageMaker numbers each version of the group as it is registered; the statement is limited "
            "to this group's versions",
        )
        allow_key_grants(p, f.key, sid="EncryptJobVolumes")
        return role


def serving_instance_types(endpoint_instance_type: str) -> list[str]:
    """What a registered model is declared to run on: the endpoint's type and the other sizes of its family
    (same accelerator, so the same serving image), from botocore's SageMaker service model."""
    same_family = family(endpoint_instance_type)
    return [endpoint_instance_type] + [
        t for t in instance_types("endpoint_instance_type") if family(t) == same_family and t != endpoint_instance_type
    ]
