"""Find resources in a template by type and properties, never by hashed logical IDs."""

from __future__ import annotations

from typing import Any


def is_subset(expected: Any, actual: Any) -> bool:
    """True when ``expected`` is contained in ``actual``: dict keys recursively, list items in any order."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and is_subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and all(any(is_subset(e, a) for a in actual) for e in expected)
    return expected == actual


def resources(template: dict, type_: str, properties: dict | None = None) -> dict[str, dict]:
    """Resources of ``type_`` whose Properties contain ``properties``, by logical ID."""
    return {
        logical_id: res
        for logical_id, res in template.get("Resources", {}).items()
        if res["Type"] == type_ and is_subset(properties or {}, res.get("Properties", {}))
    }


def one(template: dict, type_: str, properties: dict | None = None) -> tuple[str, dict]:
    """The only resource of ``type_`` matching ``properties``; fails with what was found otherwise."""
    found = resources(template, type_, properties)
    assert len(found) == 1, f"expected one {type_} matching {properties}, found {len(found)}: {sorted(found)}"
    return next(iter(found.items()))


def refs(value: Any) -> set[str]:
    """Logical IDs referenced by Ref or Fn::GetAtt anywhere inside ``value``."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            found.add(target[0] if isinstance(target, list) else target.split(".")[0])
        for v in value.values():
            found |= refs(v)
    elif isinstance(value, list):
        for v in value:
            found |= refs(v)
    return found


def as_list(value: Any) -> list:
    """A policy's Action or Resource as a list (IAM allows a single value or a list)."""
    return value if isinstance(value, list) else [value]


def policy_statements(template: dict, policy_id_part: str) -> dict[str, dict]:
    """The statements of the AWS::IAM::Policy resources whose logical ID contains ``policy_id_part``, by Sid."""
    policies = {k: v for k, v in resources(template, "AWS::IAM::Policy").items() if policy_id_part in k}
    return {
        statement.get("Sid", f"{logical_id}:{index}"): statement
        for logical_id, policy in policies.items()
        for index, statement in enumerate(policy["Properties"]["PolicyDocument"]["Statement"])
    }


def arn_text(value: Any) -> str:
    """An ARN with its intrinsics shown as <...>, for reading and for endswith() checks."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(arn_text(p) for p in value["Fn::Join"][1])
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::ImportValue" in value:
        return f"<{value['Fn::ImportValue']}>"
    if "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    if "Fn::Sub" in value:
        return value["Fn::Sub"]
    return f"<{next(iter(value))}>"
