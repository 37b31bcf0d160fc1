"""Reviewed templates: synthesize, normalize, and diff every stack against its committed template.

    python -m dogbreeds.review diff     # exit 1, naming the stacks, if any template differs
    python -m dogbreeds.review accept   # make the current templates the reviewed ones

The app is synthesized with ``python app.py`` (no CDK CLI, no AWS credentials), so the result
depends only on the code and cdk.json. What changes on every build, and says nothing about the
infrastructure, is normalized away: asset hashes (code packages), the Lambda version's hashed
logical ID, and the CDK bootstrap version check. The comparison itself is ``cdk diff --template``,
run offline against the normalized cloud assembly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REVIEWED_DIR = ROOT / "reviewed-templates"
WORK_DIR = ROOT / "build" / "review"

ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b")
ASSET_HASH_PLACEHOLDER = "ASSET-HASH"
# Lambda.currentVersion's logical ID ends with an MD5 of the function's code and configuration.
VERSION_ID = re.compile(r"(CurrentVersion[0-9A-F]{8})[0-9a-f]{32}")
VERSION_PLACEHOLDER = r"\1VERSIONHASH"
# Variables the CDK CLI or a developer's shell set that would make the synth environment-specific.
_ENVIRONMENT_VARIABLES = ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION", "CDK_DEPLOY_ACCOUNT", "CDK_DEPLOY_REGION",
                          "CDK_CONTEXT_JSON", "CDK_OUTDIR")  # fmt: skip


class ReviewError(RuntimeError):
    """The app could not be synthesized or compared; the message says why."""


@dataclass(frozen=True)
class StackDiff:
    stack: str
    differs: bool
    output: str


def normalize(template: dict) -> dict:
    """The template without what changes on every build (see the module docstring)."""
    template = json.loads(
        VERSION_ID.sub(VERSION_PLACEHOLDER, ASSET_HASH.sub(ASSET_HASH_PLACEHOLDER, json.dumps(template)))
    )
    template.get("Parameters", {}).pop("BootstrapVersion", None)
    template.get("Rules", {}).pop("CheckBootstrapVersion", None)
    for section in ("Parameters", "Rules"):
        if section in template and not template[section]:
            del template[section]
    for resource in template.get("Resources", {}).values():
        metadata = resource.get("Metadata", {})
        for key in [k for k in metadata if k.startswith("aws:asset:")]:
            del metadata[key]
        if "Metadata" in resource and not metadata:
            del resource["Metadata"]
    return template


def dumps(template: dict) -> str:
    return json.dumps(template, indent=1) + "\n"


def synthesize(outdir: Path, context: Mapping[str, str] | None = None) -> list[str]:
    """Run app.py into ``outdir`` (cleared first); return the stack names, in manifest order."""
    shutil.rmtree(outdir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in _ENVIRONMENT_VARIABLES}
    env["CDK_OUTDIR"] = str(outdir)
    if context:
        env["CDK_CONTEXT_JSON"] = json.dumps(dict(context))
    result = subprocess.run(  # our own app, with this interpreter
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ReviewError(f"synth failed (exit {result.returncode}):\n{result.stderr.strip() or result.stdout.strip()}")
    manifest = json.loads((outdir / "manifest.json").read_text())
    return [name for name, artifact in manifest["artifacts"].items() if artifact["type"] == "aws:cloudformation:stack"]


def normalized_assembly(assembly: Path, stacks: list[str], target: Path) -> Path:
    """A copy of the cloud assembly whose templates are normalized (``cdk diff --app`` reads it)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(assembly, target, ignore=shutil.ignore_patterns("asset.*"))
    for stack in stacks:
        path = target / f"{stack}.template.json"
        path.write_text(dumps(normalize(json.loads(path.read_text()))))
    return target


DIFF_COUNT = re.compile(r"Number of stacks with differences: (\d+)")
# cdk diff ends each run with that count; one run per stack would repeat it for every stack, so it is
# replaced by one summary line for all of them.
DIFF_COUNT_LINE = re.compile(r"^.*Number of stacks with differences: \d+[ \t]*$", re.MULTILINE)


def diff_stack(assembly: Path, stack: str, reviewed: Path) -> StackDiff:
    command = ["npx", "--no-install", "cdk", "diff", "--app", str(assembly), "--template", str(reviewed)]
    command += ["--exclusively", "--fail", "--no-notices", "--no-version-reporting", stack]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    output = _clean(result.stdout + result.stderr)
    counted = DIFF_COUNT.search(output)
    if counted is None or result.returncode not in (0, 1):
        raise ReviewError(f"cdk diff of {stack} failed (exit {result.returncode}):\n{output}")
    output = DIFF_COUNT_LINE.sub("", output).strip()
    return StackDiff(stack=stack, differs=int(counted.group(1)) > 0, output=output)


def diff(context: Mapping[str, str] | None = None, reviewed_dir: Path = REVIEWED_DIR, work_dir: Path = WORK_DIR) -> int:
    """Print every stack's diff against its reviewed template; 0 when all match, 1 otherwise."""
    stacks = synthesize(work_dir / "cdk.out", context)
    assembly = normalized_assembly(work_dir / "cdk.out", stacks, work_dir / "normalized")
    changed: list[str] = []
    report: list[str] = []
    for stack in stacks:
        reviewed = reviewed_dir / f"{stack}.template.json"
        if not reviewed.exists():
            changed.append(stack)
            report.append(f"Stack {stack}: new, no reviewed template ({reviewed} is missing)")
            continue
        current = json.loads((assembly / f"{stack}.template.json").read_text())
        if current == json.loads(reviewed.read_text()):
            # Identical: nothing for cdk diff to show (it takes seconds a stack: Node.js starts each time).
            report.append(f"Stack {stack}\nThere were no differences")
            continue
        result = diff_stack(assembly, stack, reviewed)
        report.append(result.output)
        if result.differs:
            changed.append(stack)
    for gone in sorted(p.name.removesuffix(".template.json") for p in reviewed_dir.glob("*.template.json")):
        if gone not in stacks:
            changed.append(gone)
            report.append(f"Stack {gone}: removed from the app, but {gone}.template.json is still reviewed")
    if changed:
        summary = (
            f"Unreviewed infrastructure changes in {len(changed)} of {len(set(stacks) | set(changed))} stacks: "
            f"{', '.join(changed)}.\n"
            "Read the diff above; if it is what you meant, run `make accept` and commit reviewed-templates/."
        )
    else:
        summary = f"All {len(stacks)} stacks match their reviewed templates."
    text = "\n\n".join([*report, summary])
    (work_dir / "diff.txt").write_text(text + "\n")
    print(text)
    return 1 if changed else 0


def accept(reviewed_dir: Path = REVIEWED_DIR, work_dir: Path = WORK_DIR) -> int:
    """Write the current normalized templates as the reviewed ones (and drop removed stacks')."""
    stacks = synthesize(work_dir / "cdk.out")
    reviewed_dir.mkdir(exist_ok=True)
    for old in reviewed_dir.glob("*.template.json"):
        if old.name.removesuffix(".template.json") not in stacks:
            old.unlink()
    for stack in stacks:
        template = json.loads((work_dir / "cdk.out" / f"{stack}.template.json").read_text())
        (reviewed_dir / f"{stack}.template.json").write_text(dumps(normalize(template)))
    print(f"Accepted {len(stacks)} templates into {reviewed_dir}: review and commit them.")
    return 0


def _clean(text: str) -> str:
    """cdk diff's output without the jsii/npm warnings that precede it."""
    lines = [line for line in text.splitlines() if not line.startswith(("b'", "npm warn"))]
    return "\n".join(lines).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dogbreeds.review", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("diff", "accept"), help="diff: compare; accept: take the current ones")
    args = parser.parse_args(argv)
    try:
        return diff() if args.command == "diff" else accept()
    except ReviewError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
