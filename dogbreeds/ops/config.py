"""The app's settings as the CLI needs them: cdk.json's defaults with ``-c key=value`` overrides.

This reads the same values ``cdk synth`` reads (cdk.json's context, then ``-c``), without importing
the CDK: the CLI needs only a few of them (the project name gives every stack name), and importing
``stacks.settings`` would start a Node.js process for each command. The full validation stays where it
is, in ``stacks.settings``; tests keep the stack names and parsing here equal to it.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dogbreeds.ops.errors import UsageError

# The checkout the CLI belongs to: cdk.json, and training/metrics.py for the metric lines.
REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = REPO_ROOT / "cdk.json"

# The app's stacks, as stack_name(part) names them (stacks/composition.py).
STACK_PARTS = ("foundation", "training", "notebook", "ec2-training", "endpoint", "invoker")

PROJECT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,19}$")
_SETTINGS_KEY = re.compile(r"[a-z][a-z0-9_]*")  # CDK's own context keys contain '@', ':' or '-'
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@dataclass(frozen=True)
class AppConfig:
    """The settings' values (cdk.json, then -c) and the -c items as typed, for messages."""

    values: Mapping[str, object]
    overrides: tuple[str, ...] = ()

    @classmethod
    def load(cls, context: Sequence[str] = (), cdk_json: Path = CDK_JSON) -> AppConfig:
        try:
            defaults = json.loads(cdk_json.read_text())["context"]
        except FileNotFoundError:
            raise UsageError(
                f"{cdk_json} not found: the CLI reads the app's settings from the checkout it is installed "
                "from (pip install -e .)."
            ) from None
        values = {k: v for k, v in defaults.items() if _SETTINGS_KEY.fullmatch(k)}
        for item in context:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise UsageError(f"-c {item}: takes KEY=VALUE, for example -c project_name=dogbreeds")
            if key not in values:
                close = difflib.get_close_matches(key, list(values), n=1)
                hint = f" Did you mean {close[0]}?" if close else ""
                raise UsageError(f"-c {item}: {key} is not a setting.{hint} The settings are listed in cdk.json.")
            values[key] = value
        config = cls(values=values, overrides=tuple(context))
        if not PROJECT_NAME.match(config.text("project_name")):
            raise UsageError(
                f"project_name={config.text('project_name')!r}: accepted is 2-20 lowercase letters, digits or "
                "hyphens, starting with a letter."
            )
        return config

    # --- typed values (-c gives strings; cdk.json gives JSON values) -----------------------------

    def text(self, key: str) -> str:
        value = self.values[key]
        if not isinstance(value, str):
            raise UsageError(f"{key}={json.dumps(value)}: accepted is a string.")
        return value

    def integer(self, key: str) -> int:
        value = self.values[key]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        raise UsageError(f"{key}={value}: accepted is a whole number.")

    def boolean(self, key: str) -> bool:
        value = self.values[key]
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise UsageError(f"{key}={value}: accepted is true or false.")

    # --- names -------------------------------------------------------------------------------

    @property
    def project_name(self) -> str:
        return self.text("project_name")

    def stack_name(self, part: str) -> str:
        """The same name as ``Settings.stack_name(part)``."""
        return f"{self.project_name}-{part}"

    def cdk_command(self, verb: str, part: str) -> str:
        """``npx cdk deploy <stack>``, with this run's -c overrides, ready to paste."""
        words = ["npx", "cdk", verb, self.stack_name(part)]
        for item in self.overrides:
            words += ["-c", item]
        return shlex.join(words)
