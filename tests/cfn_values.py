"""Resolve a synthesized template's values the way a deployment would, for offline validators.

Tools that check what a stack sends to AWS (LocalStack's Step Functions interpreter, botocore's
request validation) need concrete values where the template holds intrinsics. This module gives
each one the value CloudFormation would give it in a test account: pseudo parameters of that
account, mappings looked up for its region, imports and stack outputs followed into the stack that
exports them, and physical IDs in the shapes AWS gives them (``subnet-...``, role ARNs, key ARNs).

Anything it does not know raises ``UnresolvedValue``: a validator never sees an invented shape.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCOUNT = "111122223333"
REGION = "us-east-1"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"


class UnresolvedValue(LookupError):
    """A value whose deployed form this module cannot tell."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


@dataclass
class Deployment:
    """Every template of one cloud assembly, deployed (in thought) to one account and region."""

    templates: Mapping[str, dict]
    account: str = ACCOUNT
    region: str = REGION
    _exports: dict[str, tuple[str, Any]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for stack, template in self.templates.items():
            for output in template.get("Outputs", {}).values():
                name = output.get("Export", {}).get("Name")
                if name is not None:
                    self._exports[self.resolve(stack, name)] = (stack, output["Value"])

    @classmethod
    def from_directory(cls, directory: Path, **kwargs: str) -> Deployment:
        templates = {
            p.name.removesuffix(".template.json"): json.loads(p.read_text())
            for p in sorted(directory.glob("*.template.json"))
        }
        return cls(templates=templates, **kwargs)

    # --- values ---------------------------------------------------------------------------------

    def resolve(self, stack: str, value: Any) -> Any:
        """``value`` (from ``stack``'s template) with every intrinsic replaced by its deployed value."""
        if isinstance(value, list):
            return [self.resolve(stack, v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, argument), *_ = value.items()
            if key == "Ref" or key.startswith("Fn::"):
                return self._intrinsic(stack, key, argument)
        return {k: self.resolve(stack, v) for k, v in value.items()}

    def _intrinsic(self, stack: str, key: str, arg: Any) -> Any:
        if key == "Ref":
            return self._ref(stack, arg)
        if key == "Fn::GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self._attribute(stack, logical_id, attribute)
        if key == "Fn::Join":
            separator, parts = arg
            return separator.join(str(p) for p in self.resolve(stack, parts))
        if key == "Fn::Sub":
            return self._sub(stack, arg)
        if key == "Fn::ImportValue":
            name = self.resolve(stack, arg)
            if name not in self._exports:
                raise UnresolvedValue(f"no stack exports {name!r}")
            exporter, exported = self._exports[name]
            return self.resolve(exporter, exported)
        if key == "Fn::GetStackOutput":
            other = self.resolve(stack, arg["StackName"])
            outputs = self.templates.get(other, {}).get("Outputs", {})
            if arg["OutputName"] not in outputs:
                raise UnresolvedValue(f"stack {other} has no output {arg['OutputName']}")
            return self.resolve(other, outputs[arg["OutputName"]]["Value"])
        if key == "Fn::FindInMap":
            name, top, second = (self.resolve(stack, a) for a in arg[:3])
            return self.templates[stack]["Mappings"][name][top][second]
        if key == "Fn::Select":
            index, items = self.resolve(stack, arg)
            return items[int(index)]
        if key == "Fn::GetAZs":
            return [f"{self.region}a", f"{self.region}b", f"{self.region}c"]
        raise UnresolvedValue(f"{key} is not resolved here (in stack {stack})")

    def _sub(self, stack: str, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(stack, variables[name]))
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return str(self._attribute(stack, logical_id, attribute))
            return str(self._ref(stack, name))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def _ref(self, stack: str, name: str) -> Any:
        pseudo = {
            "AWS::AccountId": self.account,
            "AWS::Region": self.region,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::StackName": stack,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{self.region}:{self.account}:stack/{stack}/"
            f"{uuid.UUID(_digest(stack)[:32])}",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        template = self.templates[stack]
        if name in template.get("Parameters", {}):
            default = template["Parameters"][name].get("Default")
            if default is None:
                raise UnresolvedValue(f"parameter {name} of {stack} has no default")
            return default
        resource = template.get("Resources", {}).get(name)
        if resource is None:
            raise UnresolvedValue(f"{stack} has no resource or parameter {name}")
        return self._physical_id(stack, name, resource)

    def _physical_id(self, stack: str, logical_id: str, resource: dict) -> str:
        kind, props = resource["Type"], resource.get("Properties", {})
        h = _digest(stack, logical_id)
        prefixes = {
            "AWS::EC2::VPC": "vpc-",
            "AWS::EC2::Subnet": "subnet-",
            "AWS::EC2::SecurityGroup": "sg-",
            "AWS::EC2::Instance": "i-",
            "AWS::EC2::VPCEndpoint": "vpce-",
        }
        if kind in prefixes:
            return prefixes[kind] + h[:17]
        if kind == "AWS::KMS::Key":
            return str(uuid.UUID(h[:32]))
        if kind == "AWS::IAM::Role":
            return props.get("RoleName") or f"{stack}-{logical_id}"[:50] + f"-{h[:12].upper()}"
        if kind == "AWS::S3::Bucket":
            return props.get("BucketName") or f"{stack}-{logical_id}"[:48].lower() + f"-{h[:12]}"
        if kind == "AWS::SSM::Parameter" and "Name" in props:
            return self.resolve(stack, props["Name"])
        if kind == "AWS::Logs::LogGroup":
            return self.resolve(stack, props.get("LogGroupName")) or f"{stack}-{logical_id}-{h[:12]}"
        if kind == "AWS::StepFunctions::StateMachine":
            name = self.resolve(stack, props.get("StateMachineName")) or f"{logical_id}-{h[:12]}"
            return f"arn:{PARTITION}:states:{self.region}:{self.account}:stateMachine:{name}"
        if kind == "AWS::SageMaker::ModelPackageGroup":
            name = self.resolve(stack, props["ModelPackageGroupName"])
            return f"arn:{PARTITION}:sagemaker:{self.region}:{self.account}:model-package-group/{name.lower()}"
        raise UnresolvedValue(f"no physical ID shape for {kind} ({stack}/{logical_id})")

    def _attribute(self, stack: str, logical_id: str, attribute: str) -> Any:
        resource = self.templates[stack]["Resources"].get(logical_id)
        if resource is None:
            raise UnresolvedValue(f"{stack} has no resource {logical_id}")
        kind = resource["Type"]
        ref = self._physical_id(stack, logical_id, resource)
        arn = f"arn:{PARTITION}"
        attributes = {
            ("AWS::IAM::Role", "Arn"): f"{arn}:iam::{self.account}:role/{ref}",
            ("AWS::KMS::Key", "Arn"): f"{arn}:kms:{self.region}:{self.account}:key/{ref}",
            ("AWS::KMS::Key", "KeyId"): ref,
            ("AWS::S3::Bucket", "Arn"): f"{arn}:s3:::{ref}",
            ("AWS::EC2::SecurityGroup", "GroupId"): ref,
            ("AWS::EC2::VPC", "CidrBlock"): self.resolve(stack, resource.get("Properties", {}).get("CidrBlock")),
            ("AWS::Logs::LogGroup", "Arn"): f"{arn}:logs:{self.region}:{self.account}:log-group:{ref}:*",
            ("AWS::StepFunctions::StateMachine", "Arn"): ref,
            ("AWS::SageMaker::ModelPackageGroup", "ModelPackageGroupArn"): ref,
        }
        if (kind, attribute) not in attributes:
            raise UnresolvedValue(f"no value for {kind}.{attribute} ({stack}/{logical_id})")
        return attributes[(kind, attribute)]
