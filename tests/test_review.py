"""The template review: normalization, and a diff that fails on an unreviewed infrastructure change."""

from __future__ import annotations

import re
import shutil

import pytest

from dogbreeds import review

HASH_A = "a" * 64
HASH_B = "b" * 64


def _template(asset_hash: str, version_hash: str) -> dict:
    return {
        "Parameters": {"BootstrapVersion": {"Type": "AWS::SSM::Parameter::Value<String>"}},
        "Rules": {"CheckBootstrapVersion": {"Assertions": []}},
        "Resources": {
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Properties": {"Code": {"S3Key": f"{asset_hash}.zip"}, "MemorySize": 512},
                "Metadata": {"aws:asset:path": f"asset.{asset_hash}", "aws:asset:property": "Code"},
            },
            f"FnCurrentVersion4E2B2261{version_hash}": {"Type": "AWS::Lambda::Version"},
        },
    }


def test_normalize_removes_only_what_changes_on_every_build():
    first = review.normalize(_template(HASH_A, "0" * 32))
    assert first == review.normalize(_template(HASH_B, "f" * 32))
    assert first == {
        "Resources": {
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Properties": {"Code": {"S3Key": "ASSET-HASH.zip"}, "MemorySize": 512},
            },
            "FnCurrentVersion4E2B2261VERSIONHASH": {"Type": "AWS::Lambda::Version"},
        }
    }


def test_normalize_keeps_real_changes():
    changed = _template(HASH_A, "0" * 32)
    changed["Resources"]["Fn"]["Properties"]["MemorySize"] = 1024
    assert review.normalize(changed) != review.normalize(_template(HASH_A, "0" * 32))


def test_committed_templates_are_normalized():
    for path in review.REVIEWED_DIR.glob("*.template.json"):
        text = path.read_text()
        assert not review.ASSET_HASH.search(text), path.name
        assert "BootstrapVersion" not in text, path.name


def test_a_changed_setting_fails_the_diff_and_names_the_stack(tmp_path, capsys):
    """Also: a stack without a reviewed template, and a reviewed template without a stack, both fail."""
    reviewed = tmp_path / "reviewed"
    # Reviewed: the app as it is now (not the committed templates, which a change in progress may be ahead of).
    review.accept(reviewed_dir=reviewed, work_dir=tmp_path / "accept")
    capsys.readouterr()
    (reviewed / "dogbreeds-notebook.template.json").unlink()
    shutil.copy(reviewed / "dogbreeds-endpoint.template.json", reviewed / "dogbreeds-retired.template.json")

    status = review.diff(
        context={"endpoint_scale_in_cooldown_seconds": "120"}, reviewed_dir=reviewed, work_dir=tmp_path / "work"
    )

    assert status == 1
    out = capsys.readouterr().out
    (summary,) = re.findall(r"^Unreviewed infrastructure changes in 3 of 7 stacks: (.*)\.$", out, re.MULTILINE)
    assert sorted(summary.split(", ")) == ["dogbreeds-endpoint", "dogbreeds-notebook", "dogbreeds-retired"]
    scaling = out.split("Stack dogbreeds-endpoint", 1)[1].split("Stack ", 1)[0]
    assert "ScaleInCooldown" in scaling and "[-] 60" in scaling and "[+] 120" in scaling
    assert "Stack dogbreeds-notebook: new, no reviewed template" in out
    assert "Stack dogbreeds-retired: removed from the app" in out
    assert "Number of stacks with differences" not in out, "one summary line, not cdk diff's count per stack"
    assert (tmp_path / "work" / "diff.txt").read_text() == out, "the file keeps all of it"


def test_synth_errors_are_reported_not_mistaken_for_a_diff(tmp_path):
    with pytest.raises(review.ReviewError, match="endpoint_min_capacity=9 must not exceed endpoint_max_capacity=3"):
        review.diff(context={"endpoint_min_capacity": "9"}, work_dir=tmp_path)
