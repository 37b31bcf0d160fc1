"""cdk-nag acknowledgments, made in one way so that tests can audit them.

Every acknowledgment goes through ``acknowledge`` with a specific reason, on the construct that
raised the finding (never a whole stack). With the context key ``nag:audit-acknowledgments`` set,
acknowledgments are recorded but not applied: the tests synthesize that way and check that every
acknowledgment still matches a finding on its construct, so none outlives its reason.
"""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

AUDIT_CONTEXT_KEY = "nag:audit-acknowledgments"
MIN_REASON_LENGTH = 40


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding (``AwsSolutions-XX`` or ``AwsSolutions-XX[finding]``)."""
    if not rule_id.startswith("AwsSolutions-"):
        raise ValueError(f"acknowledge an AwsSolutions rule id, not {rule_id!r}")
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"the reason for {rule_id} must say why, in at least {MIN_REASON_LENGTH} characters")
    if isinstance(construct, Stack):
        raise ValueError(f"acknowledge {rule_id} on the construct it concerns, not on a whole stack")
    if construct.node.try_get_context(AUDIT_CONTEXT_KEY):
        construct.node.add_metadata("dogbreeds:nag-audit", {"rule": rule_id, "reason": reason})
        return
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def acknowledge_wildcards(policy: IConstruct, reasons: dict[str, str]) -> None:
    """Acknowledge AwsSolutions-IAM5 for each wildcard resource of ``policy``, each with its reason.

    ``reasons`` maps the resource as written in the policy (tokens allowed) to why it needs a
    wildcard; the finding ID is computed the way cdk-nag writes it.
    """
    for resource, reason in reasons.items():
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::{finding_resource(policy, resource)}]", reason)


def finding_resource(scope: IConstruct, value: str) -> str:
    """A resource as cdk-nag prints it in a finding: the resolved value with ``Fn::Join`` flattened,
    ``Ref`` as ``<Name>``, ``Fn::GetAtt`` as ``<Logical.Attribute>``, ``Fn::ImportValue`` as the export
    name, and other intrinsics as JSON."""
    resolved = Stack.of(scope).resolve(value)
    if isinstance(resolved, dict) and "Fn::Join" in resolved:
        separator, parts = resolved["Fn::Join"]
        return separator.join(_finding_part(part) for part in parts)
    return _finding_part(resolved)


def _finding_part(part: object) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and "Ref" in part:
        return f"<{part['Ref']}>"
    if isinstance(part, dict) and "Fn::GetAtt" in part:
        logical_id, attribute = part["Fn::GetAtt"]
        return f"<{logical_id}.{attribute}>"
    if isinstance(part, dict) and isinstance(part.get("Fn::ImportValue"), str):
        return part["Fn::ImportValue"]
    return json.dumps(part, separators=(",", ":"))
