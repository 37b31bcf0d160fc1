"""Synth benchmark: wall time of the whole `cdk synth` and of the test command's steps.

    .venv/bin/python benchmarks/bench_synth.py --quick     # one synth
    .venv/bin/python benchmarks/bench_synth.py             # two synths, then the steps of `make test`

The commands are those of the Makefile's ``synth`` and ``test`` targets, run from the repository root
with ``.venv/bin`` first on PATH, without their ``setup`` prerequisite (a fresh virtual environment or
``npm ci`` is not what is measured; make would run ``pip install`` again whenever pyproject.toml is newer
than ``.venv/.installed``):

- synth: ``npx --no-install cdk synth --quiet --no-notices --output <temporary folder>`` (app, cdk-nag);
- test: ``ruff check .``, ``ruff format --check .``, ``pytest``, ``python -m dogbreeds.review diff``,
  each timed, and their sum.

A step that fails is reported with its exit status and last line; the others still run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import benchkit
from benchkit import REPO, log, table

VENV_BIN = REPO / ".venv" / "bin"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="one synth, no test command")
    parser.add_argument("--synths", type=int, default=None, help="synth runs (default: 1 quick, 2 full)")
    benchkit.add_report_options(parser)
    return parser


def run_step(name: str, command: list[str]) -> dict:
    env = os.environ | {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log(f"{name}: {' '.join(command)}")
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    seconds = time.perf_counter() - started
    output = (result.stdout + result.stderr).strip().splitlines()
    last = next((line for line in reversed(output) if line.strip()), "")
    log(f"{name}: {seconds:.1f} s, exit status {result.returncode}: {last[:200]}")
    return {"step": name, "command": " ".join(command), "seconds": seconds, "status": result.returncode, "last": last}


def synth(folder: Path) -> dict:
    npx = shutil.which("npx") or "npx"
    step = run_step(
        "cdk synth", [npx, "--no-install", "cdk", "synth", "--quiet", "--no-notices", "--output", str(folder)]
    )
    step["templates"] = len(list(folder.glob("*.template.json")))
    step["command"] = step["command"].replace(str(folder), "<tmp>")
    return step


def report(facts: dict, setup: dict, steps: list[dict]) -> str:
    rows = [
        (
            step["step"],
            f"`{step['command'].replace(str(VENV_BIN) + '/', '.venv/bin/')}`",
            f"{step['seconds']:.1f}",
            step["status"],
            (f"{step['templates']} templates; " if "templates" in step else "") + step["last"][:120].replace("|", "/"),
        )
        for step in steps
    ]
    tests = [step for step in steps if step["step"].startswith("test: ")]
    lines = [
        *benchkit.report_header("### Synth and tests", facts, setup),
        table(["step", "command", "seconds", "exit status", "last line"], rows),
    ]
    if tests:
        total = sum(step["seconds"] for step in tests)
        failed = [step["step"] for step in tests if step["status"] != 0]
        lines += [
            "",
            f"The test command's steps together: {total:.0f} s"
            + (f" (failed: {', '.join(failed)})" if failed else "")
            + ".",
        ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    synths = args.synths or (1 if args.quick else 2)
    facts = benchkit.machine()
    conditions = benchkit.RunConditions(args.wait_idle, benchkit.load_policy(args))
    steps = []
    for _ in range(synths):
        with tempfile.TemporaryDirectory() as folder:
            steps.append(synth(Path(folder)))
    if not args.quick:
        python = str(VENV_BIN / "python")
        for name, command in (
            ("test: ruff check", [str(VENV_BIN / "ruff"), "check", "."]),
            ("test: ruff format", [str(VENV_BIN / "ruff"), "format", "--check", "."]),
            ("test: pytest", [str(VENV_BIN / "pytest")]),
            ("test: template diff", [python, "-m", "dogbreeds.review", "diff"]),
        ):
            steps.append(run_step(name, command))
    setup = conditions.setup()
    benchkit.write_outputs(
        report(facts, setup, steps), {"machine": facts, "setup": setup, "steps": steps}, args.output, args.json
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
