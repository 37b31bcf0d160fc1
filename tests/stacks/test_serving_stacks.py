"""The endpoint and invoker stacks: model, config, endpoint, scaling, alarms; the least-privilege Lambda."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
from aws_cdk import aws_lambda as lambda_

from dogbreeds_stacks.contract import NOT_APPROVED
from dogbreeds_stacks.endpoint import PACKAGE_PARAMETER
from dogbreeds_stacks.instances import has_local_storage
from tests.helpers import arn_text, as_list, one, policy_statements, refs, resources
from tests.stacks import metric_math
from tests.synth import synthesize

ENDPOINT_ARN_SUFFIX = ":endpoint/dog-breed-classifier"
PINNED_PACKAGE = "arn:aws:sagemaker:us-east-1:111122223333:model-package/dogbreeds-models/3"


@pytest.fixture(scope="module")
def endpoint(assembly) -> dict:
    return assembly.template("endpoint")


@pytest.fixture(scope="module")
def invoker(assembly) -> dict:
    return assembly.template("invoker")


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    """Other branches: a CPU type without NVMe, a pinned package version, provisioned-concurrency autoscaling."""
    return synthesize(
        tmp_path_factory.mktemp("serving-variant"),
        endpoint_instance_type="ml.c5.xlarge",
        endpoint_model_package_arn=PINNED_PACKAGE,
        lambda_provisioned_autoscaling="true",
        lambda_allow_http_urls="true",
    )


# --- endpoint ---------------------------------------------------------------------------------


def test_model_is_made_from_the_package_network_isolated_in_the_vpc_with_code_from_the_artifact(endpoint):
    _, model = one(endpoint, "AWS::SageMaker::Model")
    props = model["Properties"]
    assert props["EnableNetworkIsolation"] is True
    assert props["VpcConfig"]["Subnets"] and props["VpcConfig"]["SecurityGroupIds"]
    container = props["PrimaryContainer"]
    assert container["ModelPackageName"] == {"Ref": PACKAGE_PARAMETER}
    assert "Image" not in container and "ModelDataUrl" not in container, "the package names both"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    # The package's image is a PyTorch inference DLC: the role may pull from that repository in each region.
    mapping = endpoint["Mappings"]["PyTorchInferenceRegistry260"]
    assert mapping["us-east-1"] == {"account": "763104351884"}
    assert len(mapping) > 30, "every region sagemaker-core knows"


def test_model_comes_from_the_approved_package_and_an_unapproved_deploy_fails_first(endpoint, settings):
    parameter = endpoint["Parameters"][PACKAGE_PARAMETER]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<String>"
    assert parameter["Default"] == settings.names.approved_package_parameter == "/dogbreeds/model/approved-package"
    (assertion,) = endpoint["Rules"]["ModelIsApproved"]["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": PACKAGE_PARAMETER}, NOT_APPROVED]}]}
    message = assertion["AssertDescription"]
    assert message.startswith("No model package has been approved yet in dogbreeds-models: ")
    for what in ("`dogbreeds models`", "`dogbreeds approve VERSION`", "endpoint_model_package_arn"):
        assert what in message


def test_a_pinned_package_version_replaces_the_approved_one(variant):
    template = variant.template("endpoint")
    _, model = one(template, "AWS::SageMaker::Model")
    assert model["Properties"]["PrimaryContainer"]["ModelPackageName"] == PINNED_PACKAGE
    assert "ModelIsApproved" not in template.get("Rules", {})
    assert PACKAGE_PARAMETER not in template.get("Parameters", {})
    assert template["Outputs"]["ModelPackageArn"]["Value"] == PINNED_PACKAGE


def test_endpoint_config_on_gpu_with_the_minimum_as_initial_count(endpoint, settings):
    _, config = one(endpoint, "AWS::SageMaker::EndpointConfig")
    (variant,) = config["Properties"]["ProductionVariants"]
    assert variant["InstanceType"] == "ml.g4dn.xlarge"
    assert variant["InitialInstanceCount"] == settings.endpoint_min_capacity
    assert variant["VariantName"] == "AllTraffic"


def test_volume_key_only_where_the_instance_type_allows_it(endpoint, variant):
    _, nvme = one(endpoint, "AWS::SageMaker::EndpointConfig")
    assert has_local_storage("ml.g4dn.xlarge") and "KmsKeyId" not in nvme["Properties"]
    _, ebs = one(variant.template("endpoint"), "AWS::SageMaker::EndpointConfig")
    assert not has_local_storage("ml.c5.xlarge") and "KmsKeyId" in ebs["Properties"]


@pytest.mark.parametrize(
    ("instance_type", "local"),
    [
        ("ml.g4dn.xlarge", True),
        ("ml.g5.2xlarge", True),
        ("ml.p4d.24xlarge", True),
        ("ml.m5d.large", True),
        ("ml.p3.2xlarge", False),
        ("ml.c5.xlarge", False),
        ("ml.m5.large", False),
        ("ml.inf2.xlarge", False),
    ],
)
def test_nvme_rule(instance_type, local):
    assert has_local_storage(instance_type) is local


def test_endpoint_keeps_its_name_and_scaled_count_and_rolls_back_on_alarms(endpoint):
    _, ep = one(endpoint, "AWS::SageMaker::Endpoint")
    props = ep["Properties"]
    assert props["EndpointName"] == "dog-breed-classifier"
    assert props["RetainAllVariantProperties"] is True
    alarms = {a["AlarmName"]["Ref"] for a in props["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]}
    assert alarms == set(resources(endpoint, "AWS::CloudWatch::Alarm"))
    policy = props["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TerminationWaitInSeconds"] > 0, "a bake period in which the alarms can roll back"
    assert "ModelName" not in one(endpoint, "AWS::SageMaker::Model")[1]["Properties"], "replaced on change"


def test_alarms_watch_5xx_latency_and_model_errors(endpoint, settings):
    alarms = resources(endpoint, "AWS::CloudWatch::Alarm")
    by_name = {a["Properties"]["AlarmName"]: a["Properties"] for a in alarms.values()}
    latency = by_name["dog-breed-classifier-model-latency"]
    assert latency["MetricName"] == "ModelLatency" and latency["ExtendedStatistic"] == "p90"
    assert latency["Threshold"] == settings.endpoint_latency_alarm_ms * 1000
    errors = by_name["dog-breed-classifier-model-errors"]
    assert errors["MetricName"] == "InvocationModelErrors"
    five = by_name["dog-breed-classifier-5xx-errors"]
    metric_names = {m["MetricStat"]["Metric"]["MetricName"] for m in five["Metrics"] if "MetricStat" in m}
    assert metric_names == {"Invocation5XXErrors", "Invocations"}


def five_xx_alarm(template: dict) -> dict:
    alarms = resources(template, "AWS::CloudWatch::Alarm", {"AlarmName": "dog-breed-classifier-5xx-errors"})
    (alarm,) = alarms.values()
    return alarm["Properties"]


def test_5xx_rate_expression_follows_cloudwatch_metric_math_rules(endpoint):
    metrics = five_xx_alarm(endpoint)["Metrics"]
    ids = {m["Id"] for m in metrics}
    (expression,) = [m for m in metrics if "Expression" in m]
    assert expression["ReturnData"] is True
    assert all(m["ReturnData"] is False for m in metrics if m is not expression), "an alarm watches one series"
    checked = metric_math.check(expression["Expression"], ids - {expression["Id"]})
    assert checked.result_type == metric_math.TS
    assert checked.used_ids == {"errors", "invocations"}, "both ids are defined in the alarm's Metrics"
    # No traffic is no error rate: the IF form divides only where there were invocations.
    assert [c.name for c in checked.calls] == ["IF"]
    assert checked.calls[0].argument_types == (metric_math.TS, metric_math.TS, metric_math.S)
    assert re.fullmatch(r"IF\(invocations > 0, 100 \* errors / invocations, 0\)", expression["Expression"])


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("100 * errors / MAX([invocations, 1])", "a scalar cannot be an element"),
        ("MAX(invocations)", "the result is a scalar"),
        ("IF(1, 2, 3)", "none of the documented IF syntaxes"),
        ("100 * errors / requests", "'requests' is not the id"),
        ("max(errors)", "'max' is not a metric-math function"),
    ],
)
def test_the_metric_math_checker_refuses_what_cloudwatch_refuses(expression, message):
    with pytest.raises(metric_math.MetricMathError, match=re.escape(message)):
        metric_math.check(expression, {"errors", "invocations"})


def test_target_tracking_on_invocations_per_instance(endpoint, settings):
    target_id, target = one(endpoint, "AWS::ApplicationAutoScaling::ScalableTarget")
    props = target["Properties"]
    assert (props["MinCapacity"], props["MaxCapacity"]) == (1, 3)
    assert props["ResourceId"] == "endpoint/dog-breed-classifier/variant/AllTraffic"
    assert props["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    endpoint_id, _ = one(endpoint, "AWS::SageMaker::Endpoint")
    assert endpoint_id in target["DependsOn"]
    _, policy = one(endpoint, "AWS::ApplicationAutoScaling::ScalingPolicy")
    config = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert config == {
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        "TargetValue": 70,
        "ScaleInCooldown": 60,
        "ScaleOutCooldown": 60,
    }
    assert policy["Properties"]["ScalingTargetId"] == {"Ref": target_id}


def test_outputs_name_the_autoscaling_registration_for_dogbreeds_resize_endpoint(endpoint):
    """dogbreeds resize-endpoint registers the variant again under these names after the deploy."""
    _, target = one(endpoint, "AWS::ApplicationAutoScaling::ScalableTarget")
    _, policy = one(endpoint, "AWS::ApplicationAutoScaling::ScalingPolicy")
    outputs = endpoint["Outputs"]
    assert outputs["ScalableTargetResourceId"]["Value"] == target["Properties"]["ResourceId"]
    assert outputs["ScalingPolicyName"]["Value"] == policy["Properties"]["PolicyName"]
    assert isinstance(policy["Properties"]["PolicyName"], str), "a name known before the deploy"


def test_an_instance_type_change_cannot_deploy_with_autoscaling_registered(endpoint, tmp_path):
    """Why `dogbreeds resize-endpoint` exists: in the template diff of a size change, the endpoint gets a new
    config with another instance type (CloudFormation calls UpdateEndpoint while the variant is still a
    registered scalable target, which SageMaker refuses), and the scalable target and its policy do not
    change at all: CloudFormation neither deregisters them first nor undoes the command's registration."""
    resized = synthesize(tmp_path, endpoint_instance_type="ml.g5.xlarge").template("endpoint")
    (before_config,) = endpoint["Resources"]["Config"]["Properties"]["ProductionVariants"]
    (after_config,) = resized["Resources"]["Config"]["Properties"]["ProductionVariants"]
    assert (before_config["InstanceType"], after_config["InstanceType"]) == ("ml.g4dn.xlarge", "ml.g5.xlarge")
    assert after_config["VariantName"] == before_config["VariantName"], "the variant, its alarms and scaling stay"
    assert resized["Resources"]["Endpoint"]["Properties"]["EndpointConfigName"] == {
        "Fn::GetAtt": ["Config", "EndpointConfigName"]
    }
    for type_ in ("AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy"):
        assert resources(resized, type_) == resources(endpoint, type_), f"{type_} changed"
    assert resized["Outputs"]["ScalingPolicyName"] == endpoint["Outputs"]["ScalingPolicyName"]


def _dashboard_widgets(template: dict) -> list[dict]:
    _, dashboard = one(template, "AWS::CloudWatch::Dashboard")
    return json.loads(arn_text(dashboard["Properties"]["DashboardBody"]))["widgets"]  # intrinsics shown as "<...>"


def _dashboard_metrics(template: dict) -> list[tuple[str, str, dict[str, str], dict]]:
    """Every graphed metric: namespace, name, dimensions and options (period, stat, label, axis)."""
    rows = [row for w in _dashboard_widgets(template) if w["type"] == "metric" for row in w["properties"]["metrics"]]
    return [(row[0], row[1], dict(zip(row[2:-1:2], row[3:-1:2], strict=True)), row[-1]) for row in rows]


def test_dashboard_shows_the_endpoint_its_instances_and_the_lambda(endpoint, settings):
    metrics = _dashboard_metrics(endpoint)
    shown = {(namespace, name) for namespace, name, _, _ in metrics}
    for name in ("Invocations", "ModelLatency", "OverheadLatency", "Invocation4XXErrors", "Invocation5XXErrors"):
        assert ("AWS/SageMaker", name) in shown
    assert ("AWS/SageMaker", "ConcurrentRequestsPerModel") in shown
    # The instances' utilization is in SageMaker's own namespace, under the same dimensions as the invocations.
    for name in ("GPUUtilization", "GPUMemoryUtilization", "CPUUtilization", "MemoryUtilization"):
        assert ("/aws/sagemaker/Endpoints", name) in shown
    lambda_alias = {
        "FunctionName": settings.names.lambda_function,
        "Resource": f"{settings.names.lambda_function}:live",
    }
    for namespace, name, dimensions, options in metrics:
        assert options["period"] == 60, name
        if namespace == "AWS/Lambda":
            assert dimensions == lambda_alias, name
        else:
            assert dimensions == {"EndpointName": settings.endpoint_name, "VariantName": "AllTraffic"}, name
    lambda_names = {name for namespace, name, _, _ in metrics if namespace == "AWS/Lambda"}
    assert lambda_names >= {"Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions"}
    (alarms,) = [w["properties"]["alarms"] for w in _dashboard_widgets(endpoint) if w["type"] == "alarm"]
    assert len(alarms) == len(resources(endpoint, "AWS::CloudWatch::Alarm")) == 3


def test_outputs_name_what_is_served_and_the_config_the_endpoint_should_run(endpoint):
    outputs = endpoint["Outputs"]
    assert set(outputs) == {
        "EndpointName",
        "ScalableTargetResourceId",
        "ScalingPolicyName",
        "DashboardName",
        "DashboardUrl",
        "ModelPackageArn",
        "EndpointConfigName",
    }
    dashboard_id, _ = one(endpoint, "AWS::CloudWatch::Dashboard")
    assert arn_text(outputs["DashboardUrl"]["Value"]) == (
        "https://<AWS::Region>.console.aws.amazon.com/cloudwatch/home?region=<AWS::Region>"
        f"#dashboards:name=<{dashboard_id}>"
    )
    assert outputs["ModelPackageArn"]["Value"] == {"Ref": PACKAGE_PARAMETER}
    config_id, _ = one(endpoint, "AWS::SageMaker::EndpointConfig")
    assert outputs["EndpointConfigName"]["Value"] == {"Fn::GetAtt": [config_id, "EndpointConfigName"]}


def test_model_role_reads_only_its_group_and_model_artifacts(endpoint):
    statements = policy_statements(endpoint, "ModelPolicy")
    describe = statements["DescribeModelPackage"]
    assert describe["Action"] == "sagemaker:DescribeModelPackage"
    assert arn_text(describe["Resource"]).endswith(":model-package/dogbreeds-models/*")
    reads = sorted(arn_text(r).rsplit(">/", 1)[1] for r in as_list(statements["ReadModelArtifact"]["Resource"]))
    assert reads == ["models/*"], "the packages' artifacts, nothing else"
    assert arn_text(statements["PullInferenceImage"]["Resource"]).endswith(":repository/pytorch-inference")
    sagemaker_actions = {a for s in statements.values() for a in as_list(s["Action"]) if a.startswith("sagemaker:")}
    assert sagemaker_actions == {"sagemaker:DescribeModelPackage"}
    every_action = {a for s in statements.values() for a in as_list(s["Action"])}
    assert "s3:PutObject" not in every_action


# --- invoker ---------------------------------------------------------------------------------


def test_lambda_runs_the_latest_python_runtime(invoker):
    _, function = one(invoker, "AWS::Lambda::Function")
    pythons = [r for r in dir(lambda_.Runtime) if r.startswith("PYTHON_3_")]
    latest = max(pythons, key=lambda r: int(r.rsplit("_", 1)[1]))
    assert function["Properties"]["Runtime"] == getattr(lambda_.Runtime, latest).name


def test_lambda_is_in_private_subnets_with_https_only_egress(invoker, assembly):
    _, function = one(invoker, "AWS::Lambda::Function")
    vpc = function["Properties"]["VpcConfig"]
    assert all("privateSubnet" in str(s) for s in vpc["SubnetIds"]) and len(vpc["SubnetIds"]) == 2
    (sg_ref,) = vpc["SecurityGroupIds"]
    group = invoker["Resources"][sg_ref["Fn::GetAtt"][0]]["Properties"]
    assert group["SecurityGroupEgress"] == [
        {
            "CidrIp": "0.0.0.0/0",
            "Description": "HTTPS: image URLs and AWS APIs",
            "FromPort": 443,
            "IpProtocol": "tcp",
            "ToPort": 443,
        }
    ]
    assert "SecurityGroupIngress" not in group


def foundation_subnet_cidr(foundation: dict, reference: dict) -> ipaddress.IPv4Network:
    """The CIDR block of the foundation's subnet that another stack's SubnetId refers to."""
    output = foundation["Outputs"][reference["Fn::GetStackOutput"]["OutputName"]]
    subnet = foundation["Resources"][output["Value"]["Ref"]]
    assert subnet["Type"] == "AWS::EC2::Subnet"
    return ipaddress.ip_network(subnet["Properties"]["CidrBlock"])


def runtime_endpoint_ingress(invoker: dict) -> list[dict]:
    """Every ingress rule of the sagemaker.runtime interface endpoint's security groups."""
    _, endpoint = one(invoker, "AWS::EC2::VPCEndpoint")
    groups = {ref["Fn::GetAtt"][0] for ref in endpoint["Properties"]["SecurityGroupIds"]}
    inline = [rule for g in groups for rule in invoker["Resources"][g]["Properties"].get("SecurityGroupIngress", [])]
    separate = [
        rule["Properties"]
        for rule in resources(invoker, "AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"]["Fn::GetAtt"][0] in groups
    ]
    return inline + separate


def test_runtime_interface_endpoint_with_private_dns_admits_only_our_endpoint(invoker, assembly, settings):
    _, endpoint = one(invoker, "AWS::EC2::VPCEndpoint")
    props = endpoint["Properties"]
    assert props["PrivateDnsEnabled"] is True and props["VpcEndpointType"] == "Interface"
    assert arn_text(props["ServiceName"]).endswith(".sagemaker.runtime")
    (statement,) = props["PolicyDocument"]["Statement"]
    assert statement["Action"] == "sagemaker:InvokeEndpoint"
    assert arn_text(statement["Resource"]).endswith(ENDPOINT_ARN_SUFFIX)
    # Private DNS sends every sagemaker.runtime call made in the VPC to this endpoint, so the endpoint
    # admits HTTPS from the whole VPC; its policy still allows only InvokeEndpoint on our endpoint.
    (rule,) = runtime_endpoint_ingress(invoker)
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 443, 443)
    admitted = ipaddress.ip_network(rule["CidrIp"])
    assert admitted == ipaddress.ip_network(settings.vpc_cidr)
    # The clients the design names: the notebook (its role may call InvokeEndpoint) and the Lambda.
    foundation = assembly.template("foundation")
    _, notebook = one(assembly.template("notebook"), "AWS::SageMaker::NotebookInstance")
    assert foundation_subnet_cidr(foundation, notebook["Properties"]["SubnetId"]).subnet_of(admitted)
    _, function = one(invoker, "AWS::Lambda::Function")
    for subnet in function["Properties"]["VpcConfig"]["SubnetIds"]:
        assert foundation_subnet_cidr(foundation, subnet).subnet_of(admitted)


def lambda_log_group(invoker: dict) -> tuple[str, dict]:
    return one(invoker, "AWS::Logs::LogGroup", {"LogGroupName": "/aws/lambda/dogbreeds-predict"})


def test_lambda_role_is_exactly_invoke_endpoint_logs_and_networking(invoker):
    for role in resources(invoker, "AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]
    _, function = one(invoker, "AWS::Lambda::Function")
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    (policy_id,) = [
        logical_id
        for logical_id, policy in resources(invoker, "AWS::IAM::Policy").items()
        if {"Ref": role_id} in policy["Properties"]["Roles"] and logical_id.startswith("Policy")
    ]
    statements = policy_statements(invoker, policy_id)
    actions = {sid: sorted(as_list(s["Action"])) for sid, s in statements.items() if not sid.startswith("Role")}
    assert actions == {
        "InvokeEndpoint": ["sagemaker:InvokeEndpoint"],
        "OwnLogs": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "CreateInterfacesInOurSubnets": ["ec2:CreateNetworkInterface"],
        "ManageInterfacesInOurVpc": [
            "ec2:AssignPrivateIpAddresses",
            "ec2:CreateNetworkInterface",
            "ec2:DeleteNetworkInterface",
            "ec2:UnassignPrivateIpAddresses",
        ],
        "DescribeNetwork": ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"],
    }
    assert "ec2:Vpc" in statements["ManageInterfacesInOurVpc"]["Condition"]["ArnEquals"]
    assert arn_text(statements["InvokeEndpoint"]["Resource"]).endswith(ENDPOINT_ARN_SUFFIX)
    log_group_id, _ = lambda_log_group(invoker)
    assert refs(statements["OwnLogs"]["Resource"]) == {log_group_id}


def test_concurrency_alias_and_version(invoker, settings):
    _, function = one(invoker, "AWS::Lambda::Function")
    assert function["Properties"]["ReservedConcurrentExecutions"] == settings.lambda_reserved_concurrency == 10
    version_id, _ = one(invoker, "AWS::Lambda::Version")
    _, alias = one(invoker, "AWS::Lambda::Alias")
    assert alias["Properties"]["Name"] == "live"
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    assert alias["Properties"]["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 1}
    assert resources(invoker, "AWS::ApplicationAutoScaling::ScalableTarget") == {}, "off by default"


def test_lambda_tracing_logs_and_configuration(invoker, settings):
    _, function = one(invoker, "AWS::Lambda::Function")
    props = function["Properties"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Handler"] == "handler.handler"
    assert props["Environment"]["Variables"] == {
        "ENDPOINT_NAME": "dog-breed-classifier",
        "MAX_IMAGE_BYTES": str(4 * 1024 * 1024),
        "ALLOW_HTTP_URLS": "false",
        "FETCH_TIMEOUT_SECONDS": "5",
        "ENDPOINT_TIMEOUT_SECONDS": "7",
        "ENDPOINT_MAX_ATTEMPTS": "3",
        "API_TIMEOUT_SECONDS": "29",  # the API's integration timeout: no retry that would end after it
    }  # no TOP_K: without a top_k in the event, the endpoint's own default (the same setting) applies
    # The slowest call (fetch deadline, every endpoint attempt timing out, back-off) ends before the Lambda's timeout.
    assert settings.lambda_worst_case_seconds == 5 + 3 * 7 + (1 + 2) < props["Timeout"] == 30
    _, log_group = lambda_log_group(invoker)
    assert log_group["Properties"]["RetentionInDays"] == settings.log_retention_days


def test_provisioned_concurrency_autoscaling_when_switched_on(variant):
    template = variant.template("invoker")
    _, target = one(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["Properties"]["ScalableDimension"] == "lambda:function:ProvisionedConcurrency"
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (1, 5)
    _, policy = one(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    config = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 0.7
    assert config["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "LambdaProvisionedConcurrencyUtilization"
    }
    _, function = one(template, "AWS::Lambda::Function")
    (sg_ref,) = function["Properties"]["VpcConfig"]["SecurityGroupIds"]
    ports = sorted(
        e["FromPort"] for e in template["Resources"][sg_ref["Fn::GetAtt"][0]]["Properties"]["SecurityGroupEgress"]
    )
    assert ports == [80, 443], "http:// URLs allowed by the setting"
