"""The team's SageMaker notebook instance: private, encrypted, stopped when idle."""

from __future__ import annotations

import base64
from pathlib import Path

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from dogbreeds_stacks.constructs.iam import (
    Permissions,
    allow_bucket_prefixes,
    allow_key_use,
    allow_vpc_interfaces,
    service_role,
)
from dogbreeds_stacks.contract import PREFIXES
from dogbreeds_stacks.foundation import Foundation
from dogbreeds_stacks.settings import Settings

AUTOSTOP_SCRIPT = Path(__file__).parent / "scripts" / "notebook_autostop.py"
LIFECYCLE_SCRIPT_LIMIT = 16384  # characters of base64, per SageMaker's NotebookInstanceLifecycleHook
# Amazon Linux 2 notebook instances reach end of support on 2026-06-30. The OnStart script below is written for this
# platform (systemd timers; AL2023 installs no cron), so the platform is part of this stack, not a setting.
NOTEBOOK_PLATFORM = "notebook-al2023-v1"
AUTOSTOP_PATH = "/usr/local/bin/dogbreeds-autostop.py"
AUTOSTOP_UNIT = "dogbreeds-autostop"
AUTOSTOP_LOG = "/var/log/dogbreeds-autostop.log"
SYSTEM_PYTHON = "/usr/bin/python3"


def lifecycle_on_start(idle_minutes: int, *, root: str = "") -> str:
    """The OnStart script: install the idle check and run it from a systemd timer every five minutes.

    ``root`` prefixes every path the script writes, so that a test can run the script outside ``/``.
    """
    script = AUTOSTOP_SCRIPT.read_text()
    if "PYEOF" in script:
        raise ValueError("the autostop script must not contain the heredoc marker PYEOF")
    autostop = f"{root}{AUTOSTOP_PATH}"
    units = f"{root}/etc/systemd/system"
    command = f"{SYSTEM_PYTHON} {autostop} --idle-minutes {idle_minutes}"
    return (
        "#!/bin/bash\n"
        f"# Stop this notebook instance after {idle_minutes} idle minutes (dog-breed classifier).\n"
        "# Amazon Linux 2023 installs no cron: a systemd timer runs the check every five minutes.\n"
        "set -euo pipefail\n"
        f"mkdir -p {root}/usr/local/bin {units}\n"
        f"cat > {autostop} <<'PYEOF'\n"
        f"{script}"
        "PYEOF\n"
        f"chmod 0755 {autostop}\n"
        f"cat > {units}/{AUTOSTOP_UNIT}.service <<'UNITEOF'\n"
        "[Unit]\n"
        f"Description=Stop this notebook instance once Jupyter has been idle for {idle_minutes} minutes\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={command}\n"
        f"StandardOutput=append:{root}{AUTOSTOP_LOG}\n"
        f"StandardError=append:{root}{AUTOSTOP_LOG}\n"
        "UNITEOF\n"
        f"cat > {units}/{AUTOSTOP_UNIT}.timer <<'UNITEOF'\n"
        "[Unit]\n"
        "Description=Check every five minutes whether this notebook instance is idle\n"
        "\n"
        "[Timer]\n"
        "OnActiveSec=5min\n"
        "OnUnitActiveSec=5min\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
        "UNITEOF\n"
        "systemctl daemon-reload\n"
        f"systemctl enable --now {AUTOSTOP_UNIT}.timer\n"
        # Say in the OnStart log (CloudWatch) how the check will stop the instance, or that it cannot.
        f'{command} --check-stopper || echo "WARNING: the idle auto-stop cannot stop this instance; see above" >&2\n'
    )


def encode_lifecycle_script(script: str) -> str:
    """Base64 of the script with Unix line endings, refused when over SageMaker's limit."""
    content = base64.b64encode(script.replace("\r\n", "\n").encode()).decode()
    if len(content) > LIFECYCLE_SCRIPT_LIMIT:
        raise ValueError(f"lifecycle script is {len(content)} base64 characters; the limit is {LIFECYCLE_SCRIPT_LIMIT}")
    return content


class NotebookStack(Stack):
    """Notebook instance in a private subnet, no direct internet, no root, KMS volume, idle auto-stop."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        foundation: Foundation,
        state_machine: sfn.IStateMachine,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        s, f, names = settings, foundation, settings.names
        security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=f.vpc,
            description="Notebook instance: no inbound traffic; outbound to AWS APIs",
            allow_all_outbound=True,
        )
        role = service_role(
            self,
            "Role",
            service="sagemaker",
            description="The team's notebook: artifacts, the training pipeline, the endpoint, nothing more",
        )
        permissions = self._permissions(s, f, role, security_group, state_machine)
        self.lifecycle = sagemaker.CfnNotebookInstanceLifecycleConfig(
            self,
            "Lifecycle",
            notebook_instance_lifecycle_config_name=names.notebook_lifecycle,
            on_start=[
                sagemaker.CfnNotebookInstanceLifecycleConfig.NotebookInstanceLifecycleHookProperty(
                    content=encode_lifecycle_script(lifecycle_on_start(s.notebook_idle_minutes))
                )
            ],
        )
        self.notebook = sagemaker.CfnNotebookInstance(
            self,
            "Notebook",
            notebook_instance_name=names.notebook,
            instance_type=s.notebook_instance_type,
            role_arn=role.role_arn,
            subnet_id=f.subnet_ids[0],
            security_group_ids=[security_group.security_group_id],
            direct_internet_access="Disabled",
            root_access="Disabled",
            kms_key_id=f.key.key_id,
            volume_size_in_gb=s.notebook_volume_size_gb,
            lifecycle_config_name=self.lifecycle.attr_notebook_instance_lifecycle_config_name,
            platform_identifier=NOTEBOOK_PLATFORM,
            instance_metadata_service_configuration=sagemaker.CfnNotebookInstance.InstanceMetadataServiceConfigurationProperty(
                minimum_instance_metadata_service_version="2"
            ),
        )
        # The role's policy must exist before the instance starts and runs its lifecycle script.
        self.notebook.node.add_dependency(permissions.policy)
        CfnOutput(
            self,
            "NotebookName",
            value=names.notebook,
            description="SageMaker notebook instance (stops itself when idle)",
        )

    def _permissions(
        self,
        s: Settings,
        f: Foundation,
        role: iam.Role,
        security_group: ec2.ISecurityGroup,
        state_machine: sfn.IStateMachine,
    ) -> Permissions:
        names = s.names
        p = Permissions(self, "Policy", role=role)
        allow_bucket_prefixes(
            p,
            f.artifacts,
            read=[PREFIXES.datasets, PREFIXES.pretrained, PREFIXES.models, PREFIXES.ec2_models],
            write=[PREFIXES.datasets, PREFIXES.pretrained],
            sid="Artifacts",
        )
        allow_key_use(p, f.key, sid="UseStackKey")
        p.allow("StartTraining", ["states:StartExecution", "states:ListExecutions"], [state_machine.state_machine_arn])
        p.allow(
            "FollowTraining",
            ["states:DescribeExecution", "states:GetExecutionHistory", "states:StopExecution"],
            [p.arn("states", "execution", f"{names.state_machine}:*", separator=":")],
            wildcard="executions are named when they start; the statement is limited to this pipeline's",
        )
        p.allow(
            "WatchJobs",
            [
                "sagemaker:DescribeTrainingJob",
                "sagemaker:DescribeHyperParameterTuningJob",
                "sagemaker:ListTrainingJobsForHyperParameterTuningJob",  # dogbreeds train's table of trials
            ],
            [
                p.arn("sagemaker", "training-job", f"{names.job_name_prefix}-*"),
                p.arn("sagemaker", "hyper-parameter-tuning-job", f"{names.job_name_prefix}-*"),
            ],
            wildcard="the pipeline names its jobs per execution; the notebook may only watch those",
        )
        p.allow(
            "ReadJobLogs",
            ["logs:GetLogEvents", "logs:FilterLogEvents", "logs:DescribeLogStreams"],
            [p.arn("logs", "log-group", "/aws/sagemaker/TrainingJobs:*", separator=":")],
            wildcard="job log streams are named after the jobs; reading them is how the team follows training",
        )
        p.allow("InvokeEndpoint", ["sagemaker:InvokeEndpoint"], [p.arn("sagemaker", "endpoint", s.endpoint_name)])
        notebook = p.arn("sagemaker", "notebook-instance", names.notebook)
        p.allow("StopWhenIdle", ["sagemaker:StopNotebookInstance"], [notebook])
        p.allow(
            "NotebookLogs",
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            [p.arn("logs", "log-group", "/aws/sagemaker/NotebookInstances:*", separator=":")],
            wildcard="the notebook writes its own log streams, named by SageMaker, in this log group",
        )
        allow_vpc_interfaces(p, f.vpc, f.subnet_ids, [security_group])
        return p
