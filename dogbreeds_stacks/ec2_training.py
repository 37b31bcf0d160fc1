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
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from dogbreeds_stacks.constructs.code_asset import TrainingCodeAsset
from dogbreeds_stacks.constructs.iam import Permissions, allow_bucket_prefixes, allow_key_use
from dogbreeds_stacks.contract import PREFIXES, training_hyperparameters
from dogbreeds_stacks.foundation import Foundation
from dogbreeds_stacks.nag import acknowledge
from dogbreeds_stacks.settings import TRAINING_HYPERPARAMETERS, Settings

USER_DATA_TEMPLATE = Path(__file__).parent / "scripts" / "ec2_train.sh"
ROOT_DEVICE = "/dev/xvda"  # the Amazon Linux 2023 Deep Learning AMI's root device


def training_arguments(settings: Settings) -> list[str]:
    """train.py's hyperparameters for the EC2 run, from the settings (the paths are added by the script)."""
    hyperparameters = training_hyperparameters().HYPERPARAMETERS
    return [
        f"{hyperparameters[name].flag} {shlex.quote(str(getattr(settings, key)))}"
        for key, name in TRAINING_HYPERPARAMETERS.items()
        if key.startswith("training_")
    ]


def user_data_script(settings: Settings, *, region: str, bucket: str) -> str:
    script = USER_DATA_TEMPLATE.read_text()
    replacements = {
        "__REGION__": region,
        "__BUCKET__": bucket,
        "__CODE_PARAMETER__": settings.names.ec2_code_parameter,
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
        self, scope: Construct, construct_id: str, *, settings: Settings, foundation: Foundation, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        s, f = settings, foundation
        code = TrainingCodeAsset(self, "Code")
        security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=f.vpc,
            description="EC2 training instance: no inbound traffic (Session Manager); outbound to AWS APIs",
            allow_all_outbound=True,
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="EC2 training instance: read code and data, write its model, Session Manager",
        )
        # The run reads the code's URI from here when it starts: the user data (and with it the instance, which
        # CloudFormation replaces when its user data changes) stays the same when only the code changes.
        code_parameter = ssm.StringParameter(
            self,
            "CodeUri",
            parameter_name=s.names.ec2_code_parameter,
            string_value=code.s3_url,
            description="S3 URI of the training code the next EC2 training run uses",
        )
        permissions = self._permissions(f, role)
        permissions.allow("ReadCodeUri", ["ssm:GetParameter"], [code_parameter.parameter_arn])
        code.grant_read(role)
        user_data = ec2.UserData.custom(user_data_script(s, region=Aws.REGION, bucket=f.artifacts.bucket_name))
        self.instance = ec2.Instance(
            self,
            "Instance",
            vpc=f.vpc,
            vpc_subnets=f.subnets,
            instance_type=ec2.InstanceType(s.ec2_training_instance_type),
            machine_image=ec2.MachineImage.from_ssm_parameter(s.ec2_training_ami_parameter),
            role=role,
            security_group=security_group,
            user_data=user_data,
            # The instance terminates itself after its run, so an in-place update of its user data would fail or do
            # nothing: a change of user data (a new run id, or new hyperparameters) gives it a new logical ID, and
            # CloudFormation replaces it, which starts the new run. The script skips a run id that has a model.
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
                        kms_key=f.key,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        self.instance.node.add_dependency(permissions.policy)
        acknowledge(
            self.instance,
            "AwsSolutions-EC29",
            "the instance terminates itself when training ends; termination protection would also block "
            "cdk destroy of a run that is still going",
        )
        CfnOutput(
            self,
            "InstanceId",
            value=self.instance.instance_id,
            description="EC2 instance of this training run (it terminates itself when done; Session Manager to log in)",
        )
        # The object key in the artifact bucket (the foundation stack outputs the bucket's name).
        CfnOutput(
            self,
            "ModelKey",
            value=f"{PREFIXES.ec2_models}{s.ec2_training_run_id}/model.tar.gz",
            description="Key of this run's model.tar.gz in the artifact bucket (the foundation's ArtifactBucketName)",
        )

    def _permissions(self, f: Foundation, role: iam.Role) -> Permissions:
        p = Permissions(self, "Policy", role=role)
        allow_bucket_prefixes(
            p, f.artifacts, read=[PREFIXES.datasets, PREFIXES.pretrained], write=[PREFIXES.ec2_models], sid="Artifacts"
        )
        allow_key_use(p, f.key, sid="UseStackKey")
        p.allow(
            "SessionManagerChannels",
            [
                "ssmmessages:CreateControlChannel",
                "ssmmessages:CreateDataChannel",
                "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel",
            ],
            ["*"],
            wildcard="Session Manager's ssmmessages channel actions support no resource-level permissions",
        )
        p.allow(
            "SessionManagerRegistration",
            ["ssm:UpdateInstanceInformation"],
            [p.arn("ec2", "instance", "*")],
            wildcard="the instance registers itself with Session Manager; its ID is not known before it exists",
        )
        return p
