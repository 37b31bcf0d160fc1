"""The foundation stack: encryption, TLS-only access, versioning, logging, key rotation, private workloads."""

from __future__ import annotations

import pytest

from tests.helpers import one, refs, resources
from tests.synth import synthesize


def _bucket_by_encryption(template: dict, algorithm: str) -> tuple[str, dict]:
    return one(
        template,
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": algorithm}}]
            }
        },
    )


def test_kms_key_rotates(foundation):
    _, key = one(foundation, "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True


def test_artifact_bucket_is_encrypted_with_the_stack_key(foundation):
    key_id, _ = one(foundation, "AWS::KMS::Key")
    _, bucket = _bucket_by_encryption(foundation, "aws:kms")
    rule = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert rule["BucketKeyEnabled"] is True


def test_artifact_bucket_is_versioned_private_and_logged(foundation):
    log_id, _ = _bucket_by_encryption(foundation, "AES256")
    _, bucket = _bucket_by_encryption(foundation, "aws:kms")
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": log_id}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def test_log_bucket_is_private_and_expires_logs(foundation, settings):
    _, bucket = _bucket_by_encryption(foundation, "AES256")
    props = bucket["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == settings.access_log_retention_days


def test_every_bucket_denies_requests_without_tls(foundation):
    buckets = resources(foundation, "AWS::S3::Bucket")
    assert len(buckets) == 2
    for bucket_id in buckets:
        _, policy = one(foundation, "AWS::S3::BucketPolicy", {"Bucket": {"Ref": bucket_id}})
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        deny = [s for s in statements if s["Effect"] == "Deny"]
        assert deny == [
            {
                "Action": "s3:*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Resource": [
                    {"Fn::GetAtt": [bucket_id, "Arn"]},
                    {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
                ],
            }
        ], bucket_id


def test_data_is_retained_on_stack_deletion_by_default(foundation):
    for type_ in ("AWS::S3::Bucket", "AWS::KMS::Key"):
        for logical_id, res in resources(foundation, type_).items():
            assert res["DeletionPolicy"] == "Retain", logical_id
            assert res["UpdateReplacePolicy"] == "Retain", logical_id


def test_vpc_spans_two_azs_with_private_subnets_and_one_nat(foundation):
    subnets = resources(foundation, "AWS::EC2::Subnet")
    private = {k: v for k, v in subnets.items() if _subnet_type(v) == "Private"}
    public = {k: v for k, v in subnets.items() if _subnet_type(v) == "Public"}
    assert len(private) == 2 and len(public) == 2
    azs = {str(s["Properties"]["AvailabilityZone"]) for s in private.values()}
    assert len(azs) == 2
    assert len(resources(foundation, "AWS::EC2::NatGateway")) == 1
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets.values())
    # Every private subnet's default route leaves through the NAT gateway, not the internet gateway.
    nat_id = next(iter(resources(foundation, "AWS::EC2::NatGateway")))
    private_tables = {
        a["Properties"]["RouteTableId"]["Ref"]
        for a in resources(foundation, "AWS::EC2::SubnetRouteTableAssociation").values()
        if a["Properties"]["SubnetId"]["Ref"] in private
    }
    for table in private_tables:
        _, route = one(foundation, "AWS::EC2::Route", {"RouteTableId": {"Ref": table}})
        assert route["Properties"]["NatGatewayId"] == {"Ref": nat_id}


def test_public_subnets_hold_only_the_nat_gateway_and_routing(foundation):
    public = {k for k, v in resources(foundation, "AWS::EC2::Subnet").items() if _subnet_type(v) == "Public"}
    users = {
        res["Type"]
        for logical_id, res in foundation["Resources"].items()
        if logical_id not in public and refs(res.get("Properties", {})) & public
    }
    assert users == {"AWS::EC2::NatGateway", "AWS::EC2::SubnetRouteTableAssociation"}


def test_public_subnets_are_not_exported_for_workloads(foundation):
    """Other stacks can only place resources in subnets this stack exports; none is public."""
    public = {k for k, v in resources(foundation, "AWS::EC2::Subnet").items() if _subnet_type(v) == "Public"}
    for name, output in foundation.get("Outputs", {}).items():
        assert not refs(output["Value"]) & public, name


def test_vpc_flow_logs_go_to_the_log_bucket(foundation):
    log_id, _ = _bucket_by_encryption(foundation, "AES256")
    _, flow = one(foundation, "AWS::EC2::FlowLog")
    assert flow["Properties"]["TrafficType"] == "ALL"
    assert flow["Properties"]["LogDestinationType"] == "s3"
    assert log_id in refs(flow["Properties"]["LogDestination"])


def test_s3_gateway_endpoint_serves_the_private_route_tables(foundation):
    _, endpoint = one(foundation, "AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})
    tables = {t["Ref"] for t in endpoint["Properties"]["RouteTableIds"]}
    private_subnets = {k for k, v in resources(foundation, "AWS::EC2::Subnet").items() if _subnet_type(v) == "Private"}
    private_tables = {
        a["Properties"]["RouteTableId"]["Ref"]
        for a in resources(foundation, "AWS::EC2::SubnetRouteTableAssociation").values()
        if a["Properties"]["SubnetId"]["Ref"] in private_subnets
    }
    assert tables == private_tables and len(tables) == 2


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    """The foundation with no NAT gateway and without data retention (a throwaway environment)."""
    return synthesize(tmp_path_factory.mktemp("variant"), nat_gateways="0", retain_data="false")


def test_without_nat_there_is_no_public_subnet_and_no_internet_route(variant):
    template = variant.template("foundation")
    subnets = resources(template, "AWS::EC2::Subnet")
    assert len(subnets) == 2
    assert {_subnet_type(s) for s in subnets.values()} == {"Isolated"}
    for type_ in ("AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::Route"):
        assert resources(template, type_) == {}, type_
    one(template, "AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})


def test_retain_data_false_deletes_buckets_with_their_objects(variant):
    template = variant.template("foundation")
    for logical_id, res in resources(template, "AWS::S3::Bucket").items():
        assert res["DeletionPolicy"] == "Delete", logical_id
    # Deleting a non-empty bucket fails, so each one gets the auto-delete custom resource.
    assert len(resources(template, "Custom::S3AutoDeleteObjects")) == 2


def _subnet_type(subnet: dict) -> str:
    tags = {t["Key"]: t["Value"] for t in subnet["Properties"]["Tags"]}
    return tags["aws-cdk:subnet-type"]
