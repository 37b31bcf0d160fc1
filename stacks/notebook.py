"""The team's SageMaker notebook instance: private, encrypted, stopped when idle."""

from __future__ import annotations

import base64
from pathlib import Path

from aws_cdk import Aws, CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.constructs.iam import bucket_prefix_statements, kms_data_statement, vpc_network_interface_statements
from stacks.contract import PREFIXES
from stacks.foundation import ArtifactBucketRef
from stacks.nag import acknowledge_wildcards
from stacks.settings import Settings
from stacks.training import state_machine_name
from stacks.training_pipeline import job_name_prefix

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
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        key: kms.IKey,
        artifacts: ArtifactBucketRef,
        state_machine: sfn.IStateMachine,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        s = settings
        name = f"{s.project_name}-notebook"
        subnet_ids = vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids
        security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="Notebook instance: no inbound traffic; outbound to AWS APIs",
            allow_all_outbound=True,
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com").with_conditions(
                {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
            description="The team's notebook: artifacts, the training pipeline, the endpoint, nothing more",
        )
        statements = self._statements(s, name, vpc, subnet_ids, security_group, key, artifacts, state_machine)
        policy = iam.Policy(self, "Policy", roles=[role], statements=statements)
        arn = f"arn:{Aws.PARTITION}"
        acknowledge_wildcards(
            policy,
            {
                "*": "the EC2 Describe* calls a VPC notebook needs support no resource-level permissions",
                f"{arn}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:network-interface/*": "the notebook's interface ID is "
                "not known before it exists; the ec2:Vpc condition keeps it in our VPC",
                **{
                    artifacts.objects_arn(prefix): f"the team reads and writes the objects under {prefix}; "
                    "the statement is limited to that prefix"
                    for prefix in (PREFIXES.datasets, PREFIXES.pretrained, PREFIXES.models, PREFIXES.ec2_models)
                },
                f"{arn}:states:{Aws.REGION}:{Aws.ACCOUNT_ID}:execution:{state_machine_name(s)}:*": (
                    "executions are named when they start; the statement is limited to this pipeline's"
                ),
                f"{arn}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:training-job/{job_name_prefix(s)}-*": "the "
                "pipeline names its jobs per execution; the notebook may only watch those",
                f"{arn}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:hyper-parameter-tuning-job/{job_name_prefix(s)}-*": (
                    "the pipeline names its tuning jobs per execution; the notebook may only watch those"
                ),
                f"{arn}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/TrainingJobs:*": "job log "
                "streams are named after the jobs; reading them is how the team follows training",
                f"{arn}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/NotebookInstances:*": "the "
                "notebook writes its own log streams, named by SageMaker, in this log group",
            },
        )

        self.lifecycle = sagemaker.CfnNotebookInstanceLifecycleConfig(
            self,
            "Lifecycle",
            notebook_instance_lifecycle_config_name=f"{s.project_name}-autostop",
            on_start=[
                sagemaker.CfnNotebookInstanceLifecycleConfig.NotebookInstanceLifecycleHookProperty(
                    content=encode_lifecycle_script(lifecycle_on_start(s.notebook_idle_minutes))
                )
            ],
        )
        self.notebook = sagemaker.CfnNotebookInstance(
            self,
            "Notebook",
            notebook_instance_name=name,
            instance_type=s.notebook_instance_type,
            role_arn=role.role_arn,
            subnet_id=subnet_ids[0],
            security_group_ids=[security_group.security_group_id],
            direct_internet_access="Disabled",
            root_access="Disabled",
            kms_key_id=key.key_id,
            volume_size_in_gb=s.notebook_volume_size_gb,
            lifecycle_config_name=self.lifecycle.attr_notebook_instance_lifecycle_config_name,
            platform_identifier=NOTEBOOK_PLATFORM,
            instance_metadata_service_configuration=sagemaker.CfnNotebookInstance.InstanceMetadataServiceConfigurationProperty(
                minimum_instance_metadata_service_version="2"
            ),
        )
        # The role's policy must exist before the instance starts and runs its lifecycle script.
        self.notebook.node.add_dependency(policy)
        CfnOutput(self, "NotebookName", value=name)

    @staticmethod
    def _statements(
        s: Settings,
        name: str,
        vpc: ec2.IVpc,
        subnet_ids: list[str],
        security_group: ec2.ISecurityGroup,
        key: kms.IKey,
        artifacts: ArtifactBucketRef,
        state_machine: sfn.IStateMachine,
    ) -> list[iam.PolicyStatement]:
        arn = f"arn:{Aws.PARTITION}"
        sagemaker_arn = f"{arn}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}"
        logs_arn = f"{arn}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group"
        executions = f"{arn}:states:{Aws.REGION}:{Aws.ACCOUNT_ID}:execution:{state_machine_name(s)}:*"
        return [
            *bucket_prefix_statements(
                artifacts,
                read=[PREFIXES.datasets, PREFIXES.pretrained, PREFIXES.models, PREFIXES.ec2_models],
                write=[PREFIXES.datasets, PREFIXES.pretrained],
                sid="Artifacts",
            ),
            kms_data_statement(key, sid="UseStackKey"),
            iam.PolicyStatement(
                sid="StartTraining",
                actions=["states:StartExecution", "states:ListExecutions"],
                resources=[state_machine.state_machine_arn],
            ),
            iam.PolicyStatement(
                sid="FollowTraining",
                actions=["states:DescribeExecution", "states:GetExecutionHistory", "states:StopExecution"],
                resources=[executions],
            ),
            iam.PolicyStatement(
                sid="WatchJobs",
                actions=["sagemaker:DescribeTrainingJob", "sagemaker:DescribeHyperParameterTuningJob"],
                resources=[
                    f"{sagemaker_arn}:training-job/{job_name_prefix(s)}-*",
                    f"{sagemaker_arn}:hyper-parameter-tuning-job/{job_name_prefix(s)}-*",
                ],
            ),
            iam.PolicyStatement(
                sid="ReadJobLogs",
                actions=["logs:GetLogEvents", "logs:FilterLogEvents", "logs:DescribeLogStreams"],
                resources=[f"{logs_arn}:/aws/sagemaker/TrainingJobs:*"],
            ),
            iam.PolicyStatement(
                sid="InvokeEndpoint",
                actions=["sagemaker:InvokeEndpoint"],
                resources=[f"{sagemaker_arn}:endpoint/{s.endpoint_name}"],
            ),
            iam.PolicyStatement(
                sid="StopWhenIdle",
                actions=["sagemaker:StopNotebookInstance"],
                resources=[f"{sagemaker_arn}:notebook-instance/{name}"],
            ),
            iam.PolicyStatement(
                sid="NotebookLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[f"{logs_arn}:/aws/sagemaker/NotebookInstances:*"],
            ),
            *vpc_network_interface_statements(vpc, subnet_ids, [security_group]),
        ]
