"""app.py, as `cdk synth` and `dogbreeds.review` start it: quiet, whatever the shell has set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SILENCE = "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"


def import_app(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import app.py in a new interpreter (jsii starts), printing the silencing variable it ran with."""
    return subprocess.run(
        [sys.executable, "-c", f"import app, os; print(os.environ['{SILENCE}'])"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


def test_importing_the_app_starts_jsii_without_the_node_end_of_life_banner():
    """On Node 20 jsii prints an 11-line banner, as Python byte strings, each time it starts; app.py silences it
    for Node 20 only (on Node 22 there is none to silence, and this passes as well)."""
    started = import_app({k: v for k, v in os.environ.items() if k != SILENCE})
    assert started.stdout.strip() == "20"
    assert "end-of-life" not in started.stderr and "!!!!" not in started.stderr, started.stderr


def test_a_value_already_set_wins():
    assert import_app({**os.environ, SILENCE: "20,22"}).stdout.strip() == "20,22"
