"""Shared infrastructure: the VPC, the customer-managed KMS key, the artifact and access-log buckets."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws, CfnOutput, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from dogbreeds_stacks.contract import PREFIXES
from dogbreeds_stacks.settings import Settings


@dataclass(frozen=True)
class ArtifactBucketRef:
    """The artifact bucket as other stacks see it: through one named export of its name.

    An explicit ``Fn::ImportValue`` resolves the same way when a policy is written and when the
    app is synthesized, so the wildcard object ARNs in policies (and their cdk-nag findings) read
    the same in both.
    """

    export_name: str

    @property
    def bucket_name(self) -> str:
        return Fn.import_value(self.export_name)

    @property
    def bucket_arn(self) -> str:
        return f"arn:{Aws.PARTITION}:s3:::{self.bucket_name}"

    def objects_arn(self, prefix: str) -> str:
        """Every object under ``prefix`` (which ends with '/')."""
        return f"{self.bucket_arn}/{prefix}*"

    def object_uri(self, prefix: str) -> str:
        return f"s3://{self.bucket_name}/{prefix}"


@dataclass(frozen=True)
class Foundation:
    """What the other stacks use of the foundation: the VPC and its workload subnets, the key, the bucket."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    key: kms.IKey
    artifacts: ArtifactBucketRef

    @property
    def subnet_ids(self) -> list[str]:
        return self.vpc.select_subnets(subnet_type=self.subnets.subnet_type).subnet_ids


class FoundationStack(Stack):
    """VPC across two AZs, KMS key with rotation, encrypted and logged buckets, the S3 gateway endpoint."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        s = settings
        names = s.names
        removal = RemovalPolicy.RETAIN if s.retain_data else RemovalPolicy.DESTROY
        self.key = kms.Key(
            self,
            "Key",
            alias=names.key_alias,
            description=f"{s.project_name}: data sets, model artifacts, volumes and logs",
            enable_key_rotation=True,
            removal_policy=removal,
            pending_window=Duration.days(30),
        )
        self.log_bucket, self.artifact_bucket = self._buckets(s, removal)
        self.vpc, self.workload_subnets = self._network(s)
        self.artifacts = ArtifactBucketRef(export_name=names.artifact_bucket_export)
        self.foundation = Foundation(
            vpc=self.vpc, subnets=self.workload_subnets, key=self.key, artifacts=self.artifacts
        )
        CfnOutput(
            self,
            "ArtifactBucketName",
            value=self.artifact_bucket.bucket_name,
            export_name=self.artifacts.export_name,
            description="Artifact bucket: data set, pretrained weights, models, checkpoints (KMS-encrypted)",
        )
        CfnOutput(
            self,
            "KeyArn",
            value=self.key.key_arn,
            description="KMS key of the artifact bucket and of the jobs', notebook's and endpoint's volumes",
        )
        CfnOutput(self, "VpcId", value=self.vpc.vpc_id, description="VPC of the jobs, notebook, endpoint and Lambda")

    def _buckets(self, s: Settings, removal: RemovalPolicy) -> tuple[s3.Bucket, s3.Bucket]:
        """The access-log bucket (SSE-S3: S3 delivers access logs only there) and the KMS-encrypted artifacts."""
        common = {
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "enforce_ssl": True,
            "versioned": True,
            "removal_policy": removal,
            "auto_delete_objects": not s.retain_data,
        }
        log_bucket = s3.Bucket(
            self,
            "LogBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=Duration.days(s.access_log_retention_days),
                    noncurrent_version_expiration=Duration.days(7),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            **common,
        )
        artifact_bucket = s3.Bucket(
            self,
            "ArtifactBucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            server_access_logs_bucket=log_bucket,
            server_access_logs_prefix="s3-access/artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="tidy-versions-and-uploads",
                    noncurrent_version_expiration=Duration.days(90),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
                s3.LifecycleRule(id="expire-checkpoints", prefix=PREFIXES.checkpoints, expiration=Duration.days(30)),
            ],
            **common,
        )
        return log_bucket, artifact_bucket

    def _network(self, s: Settings) -> tuple[ec2.Vpc, ec2.SubnetSelection]:
        """The VPC with flow logs, its private workload subnets and the S3 gateway endpoint."""
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(s.vpc_cidr),
            max_azs=2,
            nat_gateways=s.nat_gateways,
            subnet_configuration=self._subnets(s.nat_gateways),
            restrict_default_security_group=False,
            flow_logs={
                "all-traffic": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_s3(self.log_bucket, "vpc-flow-logs/"),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        # Workloads (jobs, notebook, endpoint, Lambda) go only into these private subnets.
        workload_subnets = ec2.SubnetSelection(
            subnet_type=(ec2.SubnetType.PRIVATE_WITH_EGRESS if s.nat_gateways else ec2.SubnetType.PRIVATE_ISOLATED)
        )
        self.s3_endpoint = vpc.add_gateway_endpoint(
            "S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[workload_subnets]
        )
        return vpc, workload_subnets

    @staticmethod
    def _subnets(nat_gateways: int) -> list[ec2.SubnetConfiguration]:
        private = ec2.SubnetConfiguration(
            name="private",
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS if nat_gateways else ec2.SubnetType.PRIVATE_ISOLATED,
            cidr_mask=20,
        )
        if not nat_gateways:
            return [private]
        # The public subnets hold the NAT gateway(s) only: no workload is ever placed there.
        public = ec2.SubnetConfiguration(
            name="nat", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24, map_public_ip_on_launch=False
        )
        return [public, private]
