"""The project as a wheel, installed away from its checkout: what it carries, and the CLI that runs from it.

The wheel is built (``pip wheel --no-deps``) from a copy of exactly what the build reads, and installed without
its dependencies into a venv of its own, which takes them from this environment's site-packages through a .pth
line (so that nothing is downloaded, and this environment's editable install is not seen). The commands run in
an empty folder, with no AWS configuration.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from dogbreeds.ops.errors import EXIT_AWS, EXIT_USAGE

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What the build reads: pyproject.toml's packages and package data, setup.py's copies, the readme and license.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "cdk.json")
BUILD_TREES = ("dogbreeds_stacks", "dogbreeds", "training")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for name in BUILD_INPUTS:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, source / name)
    for tree in BUILD_TREES:
        shutil.copytree(ROOT / tree, source / tree, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (path,) = (work / "dist").glob("*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv's bin folder, with the wheel installed (and this environment's packages for its dependencies)."""
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([env / "bin" / "python", "-c", where], text=True).strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    command = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install"]
    subprocess.run([*command, "--quiet", "--no-deps", "--no-index", "--no-compile", str(wheel)], check=True)
    return env / "bin"


def dogbreeds(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, in ``cwd``, with no AWS credentials or configuration to find."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_CONFIG_FILE": str(cwd / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(cwd / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata wait for credentials
        "AWS_REGION": "eu-west-1",
    }
    return subprocess.run(
        [str(bin_dir / "dogbreeds"), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=60
    )


def test_the_wheel_carries_the_package_data_the_defaults_and_the_license(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        assert archive.read("dogbreeds_stacks/bundled/cdk.json") == (ROOT / "cdk.json").read_bytes()
        for module in (ROOT / "training").glob("*.py"):
            assert archive.read(f"dogbreeds_stacks/bundled/training/{module.name}") == module.read_bytes()
    assert {
        "dogbreeds/prices.json",
        "dogbreeds_stacks/scripts/ec2_train.sh",
        "dogbreeds_stacks/scripts/notebook_autostop.py",
    } <= names
    assert not any(name.startswith(("cdk.json", "training/", "tests/")) for name in names), "nothing at the top"
    assert {name.split("/")[0] for name in names if "/" in name and ".dist-info" not in name} == {
        "dogbreeds_stacks",
        "dogbreeds",
    }
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_cli_runs_from_the_wheel_away_from_the_checkout(installed, tmp_path):
    where = subprocess.run(
        [
            installed / "python",
            "-c",
            "import dogbreeds, dogbreeds_stacks.contract as c; print(dogbreeds.__file__, c.CHECKOUT)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(installed.parent)) and where[1] == "None", "the wheel's modules, no checkout"

    helped = dogbreeds(installed, "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: dogbreeds") and "cost" in helped.stdout

    cost = dogbreeds(installed, "cost", cwd=tmp_path)
    assert cost.returncode == 0, cost.stderr
    assert "Per month" in cost.stdout and "Total" in cost.stdout and "ml.g4dn.xlarge" in cost.stdout

    status = dogbreeds(installed, "status", cwd=tmp_path)
    assert status.returncode == EXIT_AWS
    assert "Traceback" not in status.stderr
    assert status.stderr.splitlines()[-1].startswith("error: No AWS credentials found")


def test_a_command_that_needs_the_checkout_says_so(installed, tmp_path):
    """resize-endpoint runs `npx cdk deploy`, which needs the app's checkout: it refuses before any AWS call."""
    resized = dogbreeds(installed, "resize-endpoint", cwd=tmp_path)
    assert resized.returncode == EXIT_USAGE
    assert "Traceback" not in resized.stderr
    assert resized.stderr.startswith("error: resize-endpoint deploys the endpoint stack with `npx cdk deploy`")
    assert "checkout" in resized.stderr


def test_the_lambda_test_group_pins_what_the_project_pins():
    """make test-lambda installs pyproject.toml's lambda-tests group: the same pins as the project and dev."""
    project = PYPROJECT["project"]
    pinned = dict(map(_name_and_pin, [*project["dependencies"], *project["optional-dependencies"]["dev"]]))
    group = dict(map(_name_and_pin, PYPROJECT["dependency-groups"]["lambda-tests"]))
    assert {"boto3", "pytest", "hypothesis"} <= group.keys()
    for name in group.keys() & pinned.keys():
        assert group[name] == pinned[name], name


def _name_and_pin(requirement: str) -> tuple[str, str]:
    """``moto[s3]~=5.2`` -> ``("moto", "~=5.2")``."""
    name, _extras, pin = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*(.*)", requirement).groups()
    return name.lower(), pin
