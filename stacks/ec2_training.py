"""The same train.py on a plain Deep Learning AMI instance, the way the original project trained on EC2.

One deploy launches one run: the instance fetches the code asset and the data set, trains with
explicit paths, uploads model.tar.gz to the artifact bucket, and powers off; it terminates on
shutdown, so an idle GPU never bills. Change the setting ec2_training_run_id to train again.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from aws_cdk import Aws, CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.constructs.code_asset import TrainingCodeAsset
from stacks.constructs.iam import bucket_prefix_statements, kms_data_statement
from stacks.contract import PREFIXES
from stacks.foundation import ArtifactBucketRef
from stacks.nag import acknowledge, acknowledge_wildcards
from stacks.settings import Settings

USER_DATA_TEMPLATE = Path(__file__).parent / "scripts" / "ec2_train.sh"
ROOT_DEVICE = "/dev/xvda"  # the Amazon Linux 2023 Deep Learning AMI's root device


def training_arguments(settings: Settings) -> list[str]:
    """train.py's hyperparameters for the EC2 run (the paths are added by the script)."""
    s = settings
    return [
        f"--epochs {s.training_epochs}",
        f"--batch-size {s.training_batch_size}",
        f"--learning-rate {s.training_learning_rate}",
        f"--backbone {s.training_backbone}",
        f"--trainable {s.training_trainable}",
        f"--patience {s.training_patience}",
    ]


def user_data_script(settings: Settings, *, region: str, bucket: str, code_uri: str) -> str:
    script = USER_DATA_TEMPLATE.read_text()
    replacements = {
        "__REGION__": region,
        "__BUCKET__": bucket,
        "__CODE_URI__": code_uri,
        "__RUN_ID__": settings.ec2_training_run_id,
        "__EC2_MODELS_PREFIX__": PREFIXES.ec2_models,
        "__DATASETS_PREFIX__": PREFIXES.datasets,
        "__PRETRAINED_PREFIX__": PREFIXES.pretrained,
        "__BACKBONE__": shlex.quote(settings.training_backbone),
        "__HYPERPARAMETERS__": " ".join(training_arguments(settings)),
    }
    for placeholder, value in replacements.items():
        script = script.replace(placeholder, value)
    return script


class Ec2TrainingStack(Stack):
    """A GPU Deep Learning AMI instance in a private subnet that trains once and terminates."""

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
        code = TrainingCodeAsset(self, "Code")
        security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="EC2 training instance: no inbound traffic (Session Manager); outbound to AWS APIs",
            allow_all_outbound=True,
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="EC2 training instance: read code and data, write its model, Session Manager",
        )
        policy = iam.Policy(
            self,
            "Policy",
            roles=[role],
            statements=[
                *bucket_prefix_statements(
                    artifacts,
                    read=[PREFIXES.datasets, PREFIXES.pretrained],
                    write=[PREFIXES.ec2_models],
                    sid="Artifacts",
                ),
                kms_data_statement(key, sid="UseStackKey"),
                iam.PolicyStatement(
                    sid="SessionManagerChannels",
                    actions=[
                        "ssmmessages:CreateControlChannel",
                        "ssmmessages:CreateDataChannel",
                        "ssmmessages:OpenControlChannel",
                        "ssmmessages:OpenDataChannel",
                    ],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="SessionManagerRegistration",
                    actions=["ssm:UpdateInstanceInformation"],
                    resources=[f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:instance/*"],
                ),
            ],
        )
        code.grant_read(role)
        acknowledge_wildcards(
            policy,
            {
                "*": "Session Manager's ssmmessages channel actions support no resource-level permissions",
                f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:instance/*": "the instance registers "
                "itself with Session Manager; its ID is not known before it exists",
                **{
                    artifacts.objects_arn(prefix): f"the run reads or writes every object under {prefix}; "
                    "the statement is limited to that prefix"
                    for prefix in (PREFIXES.datasets, PREFIXES.pretrained, PREFIXES.ec2_models)
                },
            },
        )

        user_data = ec2.UserData.custom(
            user_data_script(s, region=Aws.REGION, bucket=artifacts.bucket_name, code_uri=code.s3_url)
        )
        self.instance = ec2.Instance(
            self,
            "Instance",
            vpc=vpc,
            vpc_subnets=subnets,
            instance_type=ec2.InstanceType(s.ec2_training_instance_type),
            machine_image=ec2.MachineImage.from_ssm_parameter(s.ec2_training_ami_parameter),
            role=role,
            security_group=security_group,
            user_data=user_data,
            # The instance terminates itself after its run, so an in-place update of its user data would fail or do
            # nothing: a change of user data (a new run id, new code or hyperparameters) gives it a new logical ID,
            # and CloudFormation replaces it, which starts the new run. The script skips a run id that has a model.
            user_data_causes_replacement=True,
            require_imdsv2=True,
            associate_public_ip_address=False,
            detailed_monitoring=True,
            instance_initiated_shutdown_behavior=ec2.InstanceInitiatedShutdownBehavior.TERMINATE,
            block_devices=[
                ec2.BlockDevice(
                    device_name=ROOT_DEVICE,
                    volume=ec2.BlockDeviceVolume.ebs(
                        s.ec2_training_volume_size_gb,
                        encrypted=True,
                        kms_key=key,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        self.instance.node.add_dependency(policy)
        acknowledge(
            self.instance,
            "AwsSolutions-EC29",
            "the instance terminates itself when training ends; termination protection would also block "
            "cdk destroy of a run that is still going",
        )
        CfnOutput(self, "InstanceId", value=self.instance.instance_id)
        # The object key in the artifact bucket (the foundation stack outputs the bucket's name).
        CfnOutput(self, "ModelKey", value=f"{PREFIXES.ec2_models}{s.ec2_training_run_id}/model.tar.gz")
