"""The EC2 training stack: a private GPU instance on the Deep Learning AMI that trains once and terminates."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from dogbreeds_stacks.ec2_training import user_data_script
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
        pytest.importorskip("dogbreeds_stacks.settings").Settings.from_mapping(
            pytest.importorskip("dogbreeds_stacks.settings").defaults()
        ),
        region="eu-west-1",
        bucket="bucket",
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


def test_changing_the_run_id_launches_a_new_run(tmp_path, assembly):
    """The instance terminated itself after its run, so CloudFormation must replace it (a new logical ID:
    create the new instance, delete the old one), never update its user data in place."""
    from tests.synth import synthesize

    before_id, _ = one(assembly.template("ec2-training"), "AWS::EC2::Instance")
    again = synthesize(tmp_path / "again")
    changed = synthesize(tmp_path / "changed", ec2_training_run_id="2")

    same_id, _ = one(again.template("ec2-training"), "AWS::EC2::Instance")
    assert same_id == before_id, "a deploy without changes leaves the instance (and its finished run) alone"
    changed_id, instance = one(changed.template("ec2-training"), "AWS::EC2::Instance")
    assert changed_id != before_id, "a new run id is a new instance: CloudFormation replaces it"
    joined = "".join(p for p in instance["Properties"]["UserData"]["Fn::Base64"]["Fn::Join"][1] if isinstance(p, str))
    assert 'RUN_ID="2"' in joined and 'RUN_ID="1"' not in joined
    # The outputs follow the new instance; no other stack changes with the run id.
    outputs = changed.template("ec2-training")["Outputs"]
    assert outputs["InstanceId"]["Value"] == {"Ref": changed_id}
    assert outputs["ModelKey"]["Value"] == "ec2-models/2/model.tar.gz"
    for name, template in assembly.templates():
        if not name.endswith("-ec2-training"):
            assert json.loads(changed.template_path(name).read_text()) == template, f"{name} changed"


def test_a_code_change_alone_leaves_the_instance_alone(ec2_training, settings):
    """The user data (whose change replaces the instance) names the code's SSM parameter, not the code asset:
    new code is picked up by the next run, and does not start one."""
    _, instance = one(ec2_training, "AWS::EC2::Instance")
    parts = instance["Properties"]["UserData"]["Fn::Base64"]["Fn::Join"][1]
    assert [p for p in parts if not isinstance(p, str)] == [
        {"Ref": "AWS::Region"},
        {"Fn::ImportValue": "dogbreeds-artifact-bucket"},
    ]
    user_data = "".join(p for p in parts if isinstance(p, str))
    assert re.search(r"[0-9a-f]{64}", user_data) is None, f"no asset (hash) in the user data: {user_data}"
    assert "CODE_URI=$(aws ssm get-parameter" in user_data
    assert f'CODE_PARAMETER="{settings.names.ec2_code_parameter}"' in user_data
    parameter_id, parameter = one(ec2_training, "AWS::SSM::Parameter", {"Name": settings.names.ec2_code_parameter})
    assert arn_text(parameter["Properties"]["Value"]).endswith(".gz")
    read = policy_statements(ec2_training, "Policy")["ReadCodeUri"]
    assert read["Action"] == "ssm:GetParameter"
    assert arn_text(read["Resource"]).endswith(f":parameter<{parameter_id}>"), "the parameter's name starts with /"


def test_a_replacement_never_overwrites_a_finished_run(ec2_training):
    """A replacement that keeps the run id (new code, a new Deep Learning AMI behind the SSM parameter, the
    first deploy of this version) starts the instance again: it must leave the finished run's model alone."""
    _, instance = one(ec2_training, "AWS::EC2::Instance")
    parts = instance["Properties"]["UserData"]["Fn::Base64"]["Fn::Join"][1]
    script = "".join(p if isinstance(p, str) else "<token>" for p in parts)
    # ListBucket on the run's prefix is already granted; HeadObject would need GetObject on the models.
    check = script.index('list-objects-v2 --bucket "${BUCKET}" --prefix "${MODEL_KEY}"')
    assert check < script.index('python "${WORK}/code/train.py"') and check < script.index("aws s3 sync")
    assert 'MODEL_KEY="ec2-models/${RUN_ID}/model.tar.gz"' in script
    skipped = script[check : script.index("\nfi\n", check)]
    assert "exit 0" in skipped and "ec2_training_run_id" in skipped
    # ... and keeps the finished run's log: the skipped start writes its own.
    assert 'LOG_NAME="skipped-' in skipped


@pytest.mark.parametrize("model_exists", [True, False])
def test_the_finished_run_check_in_bash(tmp_path, model_exists):
    """Run the user data's start with a fake `aws` and `shutdown`: an existing model ends the run at once."""
    from dogbreeds_stacks.settings import Settings, defaults

    script = user_data_script(Settings.from_mapping(defaults()), region="eu-west-1", bucket="bucket")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    listed = "ec2-models/1/model.tar.gz" if model_exists else "None"  # what `--output text` prints
    (bin_dir / "aws").write_text(
        f'#!/bin/bash\necho "aws $*" >> {calls}\n'
        f'if [ "$2" = list-objects-v2 ]; then echo {listed}; exit 0; fi\n'
        f'if [ "$1 $2" = "ssm get-parameter" ]; then echo s3://assets/code.tar.gz; exit 0; fi\n'
        # Stop the run right after the check: the test is about what happens before training.
        f'if [ "$2" = cp ] && [[ "$3" == s3://assets/* ]]; then exit 99; fi\nexit 0\n'
    )
    (bin_dir / "shutdown").write_text(f'#!/bin/bash\necho "shutdown $*" >> {calls}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    work = tmp_path / "work"
    script = script.replace("WORK=/opt/dogbreeds", f"WORK={work}").replace(
        "LOG=/var/log/dogbreeds-training.log", f"LOG={tmp_path}/training.log"
    )
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        timeout=60,
    )
    log = calls.read_text().splitlines()
    assert log[0].startswith("aws s3api list-objects-v2 --bucket bucket --prefix ec2-models/1/model.tar.gz ")
    assert log[-1] == "shutdown -h now", "the instance powers off (and terminates) either way"
    uploads = [line for line in log if line.startswith("aws s3 cp") and "/training.log" in line]
    (upload,) = uploads
    if model_exists:
        assert result.returncode == 0
        assert "already has a model" in (tmp_path / "training.log").read_text()
        assert not any("s3://assets/" in line for line in log), "no code download, no training"
        assert " s3://bucket/ec2-models/1/skipped-" in upload and upload.split()[4].endswith(".log")
        assert "train.log" not in upload, "the finished run's log stays"
    else:
        assert result.returncode == 99, "it went on to download the code"
        assert upload.split()[4] == "s3://bucket/ec2-models/1/train.log"
