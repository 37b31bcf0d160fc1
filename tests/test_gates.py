"""The quality gates every synth passes: cdk-nag's AwsSolutions pack and cfn-lint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3

from dogbreeds_stacks.nag import AUDIT_CONTEXT_KEY, acknowledge
from tests.synth import make_app, synthesize

CFN_LINT = Path(sys.executable).parent / "cfn-lint"
ROOT = Path(__file__).resolve().parent.parent


def test_whole_app_synthesizes_with_no_unacknowledged_nag_finding(assembly):
    # The fixture's synth raises on any finding; the report it leaves must be empty too.
    assert assembly.validation_violations() == []
    assert assembly.template_paths(), "no templates were synthesized"


def test_nag_gate_fails_the_synth_on_a_non_compliant_resource(tmp_path):
    from dogbreeds_stacks.composition import build
    from dogbreeds_stacks.settings import Settings

    app = make_app(tmp_path)
    stacks = build(app, Settings.from_context(app.node.get_all_context()))
    s3.Bucket(stacks.foundation, "Careless")  # no TLS-only policy, no access logs
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    flagged = {
        (v["ruleName"], c["constructPath"])
        for plugin in report["pluginReports"]
        for v in plugin["violations"]
        for c in v["violatingConstructs"]
    }
    assert ("AwsSolutions-S10", "dogbreeds-foundation/Careless/Resource") in flagged
    assert ("AwsSolutions-S1", "dogbreeds-foundation/Careless/Resource") in flagged


def test_every_acknowledgment_matches_a_finding_on_its_own_construct(tmp_path, assembly):
    """Synthesized with acknowledgments recorded but not applied, the findings are exactly those
    acknowledged: none is stale, each sits on (or just above) the construct that raised it."""
    audit_dir = tmp_path / "audit"
    try:
        synthesize(audit_dir, **{AUDIT_CONTEXT_KEY: True})
        violations = []
    except RuntimeError as err:
        assert "ValidationFailed" in str(err)
        report = json.loads((audit_dir / "validation-report.json").read_text())
        violations = [
            (v["ruleName"], c["constructPath"])
            for plugin in report["pluginReports"]
            for v in plugin["violations"]
            for c in v["violatingConstructs"]
        ]
    acknowledged = _recorded_acknowledgments(audit_dir)
    for ack in acknowledged:
        assert any(_covers(ack, v) for v in violations), f"stale acknowledgment {ack}"
    for violation in violations:
        assert any(_covers(ack, violation) for ack in acknowledged), f"unacknowledged {violation}"


def test_acknowledge_refuses_vague_or_broad_acknowledgments():
    stack = Stack(App(), "S")
    bucket = s3.Bucket(stack, "B")
    with pytest.raises(ValueError, match="at least 40 characters"):
        acknowledge(bucket, "AwsSolutions-S1", "not needed")
    with pytest.raises(ValueError, match="not on a whole stack"):
        acknowledge(stack, "AwsSolutions-S1", "a reason that is long enough to pass the length check")
    with pytest.raises(ValueError, match="AwsSolutions rule id"):
        acknowledge(bucket, "S1", "a reason that is long enough to pass the length check")


def test_cfn_lint_passes_on_every_template(assembly):
    paths = [str(p) for p in assembly.template_paths()]
    # .cfnlintrc.yaml at the repository root holds the one check that is ignored, with its reason.
    result = subprocess.run([str(CFN_LINT), *paths], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def _recorded_acknowledgments(directory: Path) -> set[tuple[str, str]]:
    found = set()
    for metadata_file in directory.glob("*.metadata.json"):
        for path, entries in json.loads(metadata_file.read_text()).items():
            for entry in entries:
                if entry["type"] == "dogbreeds:nag-audit":
                    found.add((entry["data"]["rule"], path.lstrip("/")))
    return found


def _covers(ack: tuple[str, str], violation: tuple[str, str]) -> bool:
    """An acknowledgment (rule, path) covers a finding of that rule on its construct or a child of it.

    ``AwsSolutions-IAM5[Resource::*]`` covers the finding reported as that or as ``AwsSolutions-IAM5``.
    """
    (rule, path), (v_rule, v_path) = ack, violation
    same_rule = rule == v_rule or rule.split("[", 1)[0] == v_rule
    return same_rule and (v_path == path or v_path.startswith(path + "/"))
