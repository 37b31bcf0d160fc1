"""The settings a command runs with: ``dogbreeds_stacks.settings``' reader (cdk.json, then ``-c``), and the
``-c`` items.

The CLI reads the settings as ``cdk synth`` does, with the app's own reader and validation; it keeps the
``-c`` items as typed, so that the ``npx cdk`` commands it prints carry them.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dogbreeds.ops.errors import UsageError
from dogbreeds_stacks.contract import CHECKOUT
from dogbreeds_stacks.names import Names
from dogbreeds_stacks.settings import CDK_JSON, Settings

# The checkout the CLI belongs to, where `npx cdk` runs; None for a wheel installed away from it (its settings'
# defaults and training/'s modules are the copies the wheel carries).
REPO_ROOT = CHECKOUT


def require_checkout(command: str, why: str) -> Path:
    """The checkout, for a command that needs it; a UsageError that says so where the CLI has none."""
    if REPO_ROOT is None:
        raise UsageError(
            f"{command} {why}, which needs the app's checkout: this dogbreeds is installed from a wheel. "
            "Run it from a clone of the repository (make setup, or pip install -e . there)."
        )
    return REPO_ROOT


@dataclass(frozen=True)
class Config:
    """The validated settings, and the ``-c`` items they were read with."""

    settings: Settings
    overrides: tuple[str, ...] = ()

    @classmethod
    def load(cls, overrides: Sequence[str] = ()) -> Config:
        """cdk.json's defaults with ``KEY=VALUE`` overrides; raises ``dogbreeds_stacks.settings.SettingsError``."""
        try:
            return cls(Settings.load(overrides), tuple(overrides))
        except FileNotFoundError as err:
            raise UsageError(
                f"{Path(err.filename or CDK_JSON)} not found: the CLI reads the app's settings from the checkout "
                "it is installed from (pip install -e .)."
            ) from None

    @property
    def names(self) -> Names:
        return self.settings.names

    def cdk_command(self, verb: str, part: str) -> str:
        """``npx cdk <verb> <stack>``, with this run's -c items, ready to paste."""
        words = ["npx", "cdk", verb, self.names.stack(part)]
        for item in self.overrides:
            words += ["-c", item]
        return shlex.join(words)
