"""Every exception to the IAM security gate (tests/test_security.py), each with its reason. Nothing else passes."""

from __future__ import annotations

# Actions that support no resource-level permissions: AWS accepts only "*" as their resource.
WILDCARD_RESOURCE_ACTIONS = {
    "ecr:GetAuthorizationToken": "the ECR login token is account-wide; image pulls are scoped to one repository",
    "cloudwatch:PutMetricData": "metrics have no ARN; statements limit it to SageMaker's namespaces by condition",
    "ec2:DescribeNetworkInterfaces": "EC2 Describe* calls take no resource ARN",
    "ec2:DescribeVpcs": "EC2 Describe* calls take no resource ARN",
    "ec2:DescribeDhcpOptions": "EC2 Describe* calls take no resource ARN",
    "ec2:DescribeSubnets": "EC2 Describe* calls take no resource ARN",
    "ec2:DescribeSecurityGroups": "EC2 Describe* calls take no resource ARN",
    "xray:PutTraceSegments": "X-Ray segments have no ARN (Lambda and Step Functions tracing)",
    "xray:PutTelemetryRecords": "X-Ray telemetry has no ARN",
    "xray:GetSamplingRules": "X-Ray sampling rules are read account-wide",
    "xray:GetSamplingTargets": "X-Ray sampling targets are read account-wide",
    "logs:CreateLogDelivery": "CloudWatch Logs vended-log delivery (Step Functions logging) takes no resource ARN",
    "logs:GetLogDelivery": "vended-log delivery takes no resource ARN",
    "logs:UpdateLogDelivery": "vended-log delivery takes no resource ARN",
    "logs:DeleteLogDelivery": "vended-log delivery takes no resource ARN",
    "logs:ListLogDeliveries": "vended-log delivery takes no resource ARN",
    "logs:PutResourcePolicy": "Step Functions logging writes the log group's resource policy, which has no ARN",
    "logs:DescribeResourcePolicies": "log resource policies have no ARN",
    "logs:DescribeLogGroups": "Step Functions logging lists log groups; the call takes no resource ARN",
    "ssmmessages:CreateControlChannel": "Session Manager channels have no ARN (EC2 training instance access)",
    "ssmmessages:CreateDataChannel": "Session Manager channels have no ARN",
    "ssmmessages:OpenControlChannel": "Session Manager channels have no ARN",
    "ssmmessages:OpenDataChannel": "Session Manager channels have no ARN",
}

# Allow statements that may name "*" or "service:*" as the action: (resource type, action) -> reason.
WILDCARD_ACTION_STATEMENTS = {
    ("AWS::KMS::Key", "kms:*"): "the default key policy delegates the key to the account's IAM policies (the account "
    'root principal); in a key policy, Resource "*" means this key only',
}
