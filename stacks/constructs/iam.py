"""Least-privilege IAM statements that more than one stack writes."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms

from stacks.foundation import ArtifactBucketRef


def vpc_network_interface_statements(
    vpc: ec2.IVpc, subnet_ids: Sequence[str], security_groups: Sequence[ec2.ISecurityGroup]
) -> list[iam.PolicyStatement]:
    """What a service needs to attach its instances or functions to our subnets, and no other VPC's.

    Creating an interface names the subnet, the security groups and the new interface; the
    interface's own ARN is unknown beforehand, so it is scoped by the VPC condition instead.
    The EC2 Describe* actions support no resource-level permissions (they need "*").
    """
    region, account = Aws.REGION, Aws.ACCOUNT_ID
    arn = f"arn:{Aws.PARTITION}:ec2:{region}:{account}"
    interface_arn = f"{arn}:network-interface/*"
    in_this_vpc = {"ArnEquals": {"ec2:Vpc": f"{arn}:vpc/{vpc.vpc_id}"}}
    return [
        iam.PolicyStatement(
            sid="CreateInterfacesInOurSubnets",
            actions=["ec2:CreateNetworkInterface"],
            resources=[
                *(f"{arn}:subnet/{subnet}" for subnet in subnet_ids),
                *(f"{arn}:security-group/{sg.security_group_id}" for sg in security_groups),
            ],
        ),
        iam.PolicyStatement(
            sid="ManageInterfacesInOurVpc",
            actions=[
                "ec2:CreateNetworkInterface",
                "ec2:CreateNetworkInterfacePermission",
                "ec2:DeleteNetworkInterface",
                "ec2:DeleteNetworkInterfacePermission",
            ],
            resources=[interface_arn],
            conditions=in_this_vpc,
        ),
        iam.PolicyStatement(
            sid="DescribeNetwork",
            actions=[
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeVpcs",
                "ec2:DescribeDhcpOptions",
                "ec2:DescribeSubnets",
                "ec2:DescribeSecurityGroups",
            ],
            resources=["*"],
        ),
    ]


def bucket_prefix_statements(
    bucket: ArtifactBucketRef,
    *,
    read: Sequence[str] = (),
    write: Sequence[str] = (),
    sid: str,
) -> list[iam.PolicyStatement]:
    """List, read and write under the given prefixes (each ends with '/') of one bucket, nothing else."""
    statements = [
        iam.PolicyStatement(
            sid=f"{sid}List",
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": sorted({f"{p}*" for p in (*read, *write)})}},
        )
    ]
    if read:
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}Read",
                actions=["s3:GetObject"],
                resources=[bucket.objects_arn(p) for p in read],
            )
        )
    if write:
        statements.append(
            iam.PolicyStatement(
                sid=f"{sid}Write",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[bucket.objects_arn(p) for p in write],
            )
        )
    return statements


def kms_data_statement(key: kms.IKey, *, sid: str) -> iam.PolicyStatement:
    """Encrypt and decrypt with the stack key (SSE-KMS objects, encrypted volumes)."""
    return iam.PolicyStatement(
        sid=sid,
        actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
        resources=[key.key_arn],
    )


def kms_grant_statement(key: kms.IKey, *, sid: str) -> iam.PolicyStatement:
    """Let an AWS service (and only a service) take a grant on the key for a volume it encrypts."""
    return iam.PolicyStatement(
        sid=sid,
        actions=["kms:CreateGrant"],
        resources=[key.key_arn],
        conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
    )
