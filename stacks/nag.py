"""cdk-nag acknowledgments, made in one way so that tests can audit them.

Every acknowledgment goes through ``acknowledge`` with a specific reason, on the construct that
raised the finding (never a whole stack). With the context key ``nag:audit-acknowledgments`` set,
acknowledgments are recorded but not applied: the tests synthesize that way and check that every
acknowledgment still matches a finding on its construct, so none outlives its reason.
"""

from __future__ import annotations

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
