"""Synthesize the app in-process the way `cdk synth` does, and read what it wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from dogbreeds_stacks.composition import AppStacks, build
from dogbreeds_stacks.settings import Settings, cdk_json_context


@dataclass
class Assembly:
    """A synthesized cloud assembly: its folder, its settings and each stack's template."""

    directory: Path
    settings: Settings
    stacks: AppStacks

    def template_path(self, stack_name: str) -> Path:
        return self.directory / f"{stack_name}.template.json"

    def template(self, part: str) -> dict[str, Any]:
        """The template of the stack named ``<project>-<part>``."""
        return json.loads(self.template_path(self.settings.stack_name(part)).read_text())

    def template_paths(self) -> list[Path]:
        return sorted(self.directory.glob("*.template.json"))

    def templates(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for path in self.template_paths():
            yield path.name.removesuffix(".template.json"), json.loads(path.read_text())

    def validation_violations(self) -> list[dict[str, Any]]:
        """cdk-nag's violations from the validation report (empty when every finding is acknowledged)."""
        report = self.directory / "validation-report.json"
        if not report.exists():
            return []
        data = json.loads(report.read_text())
        return [v for plugin in data["pluginReports"] for v in plugin.get("violations", [])]


def make_app(outdir: Path, **overrides: Any) -> cdk.App:
    """An App with cdk.json's context (settings defaults and feature flags), plus ``overrides``."""
    return cdk.App(context={**cdk_json_context(), **overrides}, outdir=str(outdir))


def synthesize(outdir: Path, **overrides: Any) -> Assembly:
    """Build and synthesize the whole app; raises RuntimeError(ValidationFailed) on a cdk-nag finding."""
    app = make_app(outdir, **overrides)
    settings = Settings.from_context(app.node.get_all_context())
    stacks = build(app, settings)
    app.synth()
    return Assembly(directory=outdir, settings=settings, stacks=stacks)
