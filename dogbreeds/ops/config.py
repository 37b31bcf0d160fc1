"""The settings a command runs with: ``stacks.settings``' reader (cdk.json, then ``-c``), and the ``-c`` items.

The CLI reads the settings as ``cdk synth`` does, with the app's own reader and validation; it keeps the
``-c`` items as typed, so that the ``npx cdk`` commands it prints carry them.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dogbreeds.ops.errors import UsageError
from stacks.names import Names
from stacks.settings import CDK_JSON, Settings

# The checkout the CLI belongs to: cdk.json, training/, and where `npx cdk` runs.
REPO_ROOT = CDK_JSON.parent


@dataclass(frozen=True)
class Config:
    """The validated settings, and the ``-c`` items they were read with."""

    settings: Settings
    overrides: tuple[str, ...] = ()

    @classmethod
    def load(cls, overrides: Sequence[str] = ()) -> Config:
        """cdk.json's defaults with ``KEY=VALUE`` overrides; raises ``stacks.settings.SettingsError``."""
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
