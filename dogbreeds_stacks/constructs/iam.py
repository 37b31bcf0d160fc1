"""Least-privilege IAM policies whose statements carry the reason for every wildcard they need.

``Permissions.allow`` takes one statement and, when a resource holds a ``*``, the reason for it: the
cdk-nag acknowledgment (``AwsSolutions-IAM5[Resource::...]``) is made from that same reason on the
policy, so a wildcard is written once, beside its reason. A wildcard without a reason, or a reason
without a wildcard, is refused when the stack is built. The helpers below add the statements more than
one stack needs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from aws_cdk import ArnFormat, Aws, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from dogbreeds_stacks.foundation import ArtifactBucketRef
from dogbreeds_stacks.nag import acknowledge, finding_resource


def service_role(scope: Construct, construct_id: str, *, service: str, description: str) -> iam.Role:
    """A role that ``service`` (``sagemaker``, ``states``) assumes only on behalf of this account: the
    ``aws:SourceAccount`` condition keeps another account's job or state machine from using it (confused deputy)."""
    return iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal(f"{service}.amazonaws.com").with_conditions(
            {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
        ),
        description=description,
    )


class Permissions:
    """One inline policy of one role, built statement by statement."""

    def __init__(self, scope: Construct, construct_id: str, *, role: iam.IRole) -> None:
        self.policy = iam.Policy(scope, construct_id, roles=[role])
        self.stack = Stack.of(scope)

    def allow(
        self,
        sid: str,
        actions: Sequence[str],
        resources: Sequence[str],
        *,
        conditions: Mapping[str, object] | None = None,
        wildcard: str | None = None,
    ) -> iam.PolicyStatement:
        """Allow ``actions`` on ``resources``; ``wildcard`` says why the resources that hold a ``*`` need it."""
        if any("*" in action for action in actions):
            raise ValueError(f"{sid}: name each action; a wildcard action is never granted here: {list(actions)}")
        wild = [r for r in resources if "*" in json.dumps(self.stack.resolve(r))]
        if wild and not wildcard:
            raise ValueError(f"{sid}: the wildcard resource(s) {wild} need their reason (wildcard=...)")
        if wildcard and not wild:
            raise ValueError(f"{sid}: a wildcard reason is given, but no resource of the statement has a wildcard")
        statement = iam.PolicyStatement(
            sid=sid, actions=list(actions), resources=list(resources), conditions=dict(conditions or {}) or None
        )
        self.policy.add_statements(statement)
        for resource in wild:
            finding = finding_resource(self.policy, resource)
            acknowledge(self.policy, f"AwsSolutions-IAM5[Resource::{finding}]", wildcard or "")
        return statement

    def arn(self, service: str, resource: str, name: str | None = None, *, separator: str = "/") -> str:
        """An ARN in this stack's partition, region and account (``Stack.format_arn``)."""
        style = ArnFormat.COLON_RESOURCE_NAME if separator == ":" else ArnFormat.SLASH_RESOURCE_NAME
        if name is None:
            style = ArnFormat.NO_RESOURCE_NAME
        return self.stack.format_arn(service=service, resource=resource, resource_name=name, arn_format=style)


# --- statements more than one stack needs ---------------------------------------------------------

NETWORK_DESCRIBE = (
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
)
SAGEMAKER_INTERFACES = (
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
)
LAMBDA_INTERFACES = (
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
NO_RESOURCE_LEVEL = "support no resource-level permissions"


def allow_vpc_interfaces(
    p: Permissions,
    vpc: ec2.IVpc,
    subnet_ids: Sequence[str],
    security_groups: Sequence[ec2.ISecurityGroup],
    *,
    manage: Sequence[str] = SAGEMAKER_INTERFACES,
    describe: Sequence[str] = NETWORK_DESCRIBE,
    service: str = "SageMaker",
) -> None:
    """What a service needs to attach its instances or functions to our subnets, and no other VPC's.

    Creating an interface names the subnet and the security groups; the interface's own ARN is unknown
    beforehand, so it is scoped by the VPC condition instead.
    """
    p.allow(
        "CreateInterfacesInOurSubnets",
        ["ec2:CreateNetworkInterface"],
        [
            *(p.arn("ec2", "subnet", subnet) for subnet in subnet_ids),
            *(p.arn("ec2", "security-group", sg.security_group_id) for sg in security_groups),
        ],
    )
    p.allow(
        "ManageInterfacesInOurVpc",
        list(manage),
        [p.arn("ec2", "network-interface", "*")],
        conditions={"ArnEquals": {"ec2:Vpc": p.arn("ec2", "vpc", vpc.vpc_id)}},
        wildcard=f"{service} creates the interfaces with IDs not known before; the ec2:Vpc condition keeps "
        "them in our VPC",
    )
    p.allow("DescribeNetwork", list(describe), ["*"], wildcard=f"the EC2 Describe* calls {NO_RESOURCE_LEVEL}")


def allow_bucket_prefixes(
    p: Permissions,
    bucket: ArtifactBucketRef,
    *,
    read: Sequence[str] = (),
    write: Sequence[str] = (),
    sid: str,
) -> None:
    """List, read and write under the given prefixes (each ends with '/') of one bucket, nothing else."""

    def why(prefixes: Sequence[str]) -> str:
        return (
            f"objects under {', '.join(prefixes)} are named by the data set, the framework or the job that "
            "writes them; the statement is limited to those prefixes"
        )

    p.allow(
        f"{sid}List",
        ["s3:ListBucket"],
        [bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": sorted({f"{prefix}*" for prefix in (*read, *write)})}},
    )
    if read:
        p.allow(f"{sid}Read", ["s3:GetObject"], [bucket.objects_arn(x) for x in read], wildcard=why(read))
    if write:
        p.allow(
            f"{sid}Write",
            ["s3:PutObject", "s3:AbortMultipartUpload"],
            [bucket.objects_arn(x) for x in write],
            wildcard=why(write),
        )


def allow_key_use(p: Permissions, key: kms.IKey, *, sid: str) -> None:
    """Encrypt and decrypt with the stack key (SSE-KMS objects, encrypted volumes)."""
    p.allow(sid, ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"], [key.key_arn])


def allow_key_grants(p: Permissions, key: kms.IKey, *, sid: str) -> None:
    """Let an AWS service (and only a service) take a grant on the key for a volume it encrypts."""
    p.allow(sid, ["kms:CreateGrant"], [key.key_arn], conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}})


def allow_image_pull(p: Permissions, repositories: Sequence[str], *, sid: str) -> None:
    """Pull from these ECR repositories only (the login token itself is account-wide)."""
    p.allow(
        sid,
        ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
        sorted(set(repositories), key=str),
    )
    p.allow("EcrLogin", ["ecr:GetAuthorizationToken"], ["*"], wildcard=f"ecr:GetAuthorizationToken {NO_RESOURCE_LEVEL}")


def allow_sagemaker_metrics(p: Permissions, *, sid: str) -> None:
    """PutMetricData, limited by condition to SageMaker's namespaces (metrics have no ARN)."""
    p.allow(
        sid,
        ["cloudwatch:PutMetricData"],
        ["*"],
        conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
        wildcard=f"cloudwatch:PutMetricData {NO_RESOURCE_LEVEL}; the condition limits it to SageMaker's namespaces",
    )
