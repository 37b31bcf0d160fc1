"""The EC2 training stack: a private GPU instance on the Deep Learning AMI that trains once and terminates."""

from __future__ import annotations

import subprocess

import pytest

from stacks.ec2_training import user_data_script
from tests.helpers import arn_text, as_list, one, policy_statements, resources


@pytest.fixture(scope="module")
def ec2_training(assembly) -> dict:
    return assembly.template("ec2-training")


def test_instance_is_private_keyless_imdsv2_encrypted_and_terminates_on_shutdown(ec2_training, settings):
    _, instance = one(ec2_training, "AWS::EC2::Instance")
    props = instance["Properties"]
    assert props["InstanceType"] == settings.ec2_training_instance_type == "g4dn.xlarge"
    assert "KeyName" not in props
    (nic,) = props["NetworkInterfaces"]
    assert nic["AssociatePublicIpAddress"] is False
    assert "privateSubnet" in str(nic["SubnetId"])
    assert props["InstanceInitiatedShutdownBehavior"] == "terminate"
    (root,) = props["BlockDeviceMappings"]
    assert root["Ebs"]["Encrypted"] is True and "KmsKeyId" in root["Ebs"]
    assert root["Ebs"]["VolumeSize"] == settings.ec2_training_volume_size_gb
    _, template = one(ec2_training, "AWS::EC2::LaunchTemplate")
    assert template["Properties"]["LaunchTemplateData"]["MetadataOptions"] == {"HttpTokens": "required"}


def test_ami_comes_from_the_public_deep_learning_ami_parameter(ec2_training, settings):
    _, instance = one(ec2_training, "AWS::EC2::Instance")
    parameter = ec2_training["Parameters"][instance["Properties"]["ImageId"]["Ref"]]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert parameter["Default"] == settings.ec2_training_ami_parameter
    assert "deeplearning" in parameter["Default"] and "pytorch" in parameter["Default"]


def test_user_data_trains_with_explicit_paths_uploads_and_powers_off(ec2_training, settings):
    _, instance = one(ec2_training, "AWS::EC2::Instance")
    parts = instance["Properties"]["UserData"]["Fn::Base64"]["Fn::Join"][1]
    script = "".join(p if isinstance(p, str) else "<token>" for p in parts)
    assert 'python "${WORK}/code/train.py"' in script
    for flag in ("--data-dir", "--model-dir", "--output-dir", "--checkpoint-dir", "--pretrained"):
        assert flag in script
    assert f"--epochs {settings.training_epochs}" in script
    assert '"${DESTINATION}/model.tar.gz"' in script and "ec2-models/" in script
    assert "trap finish EXIT" in script and "shutdown -h now" in script
    assert "test/" not in script.split("train.py")[1], "the EC2 run trains on the data set's splits, not test/"


def test_user_data_is_valid_bash():
    script = user_data_script(
        pytest.importorskip("stacks.settings").Settings.from_mapping(pytest.importorskip("stacks.settings").defaults()),
        region="eu-west-1",
        bucket="bucket",
        code_uri="s3://assets/code.tar.gz",
    )
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_instance_role_reads_code_and_data_writes_only_its_models(ec2_training):
    statements = policy_statements(ec2_training, "Policy")
    writes = [arn_text(r) for r in as_list(statements["ArtifactsWrite"]["Resource"])]
    assert len(writes) == 1 and writes[0].endswith("/ec2-models/*")
    (code,) = policy_statements(ec2_training, "RoleDefaultPolicy").values()
    assert code["Action"] == "s3:GetObject"
    (role,) = resources(ec2_training, "AWS::IAM::Role").values()
    assert "ManagedPolicyArns" not in role["Properties"]
    assert sorted(as_list(statements["SessionManagerChannels"]["Action"])) == [
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    ]


def test_security_group_has_no_ingress(ec2_training):
    (group,) = resources(ec2_training, "AWS::EC2::SecurityGroup").values()
    assert "SecurityGroupIngress" not in group["Properties"]
    assert resources(ec2_training, "AWS::EC2::SecurityGroupIngress") == {}


def test_changing_the_run_id_launches_a_new_run(tmp_path):
    from tests.synth import synthesize

    changed = synthesize(tmp_path, ec2_training_run_id="2").template("ec2-training")
    _, instance = one(changed, "AWS::EC2::Instance")
    joined = "".join(p for p in instance["Properties"]["UserData"]["Fn::Base64"]["Fn::Join"][1] if isinstance(p, str))
    # The user data changes, and with it the instance: CloudFormation replaces it, which starts a new run.
    assert 'RUN_ID="2"' in joined and 'RUN_ID="1"' not in joined
