"""One build step beyond pyproject.toml's configuration: a wheel carries a copy of the checkout's files the CLI reads.

The operator CLI reads the settings' defaults from cdk.json and train.py's accepted values (and its metric lines)
from training/. In a checkout (``pip install -e .``, the tests) it reads them where they are; an installed wheel
has no checkout, so the build copies them into the wheel under dogbreeds_stacks/bundled/, where
``dogbreeds_stacks.contract`` looks when there is no checkout. Editable installs get no copy: a stale one could
only mislead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = Path("dogbreeds_stacks", "bundled")  # in the wheel, beside dogbreeds_stacks.contract (which reads it)
FILES = ("cdk.json", "training/*.py")  # the sdist has them too (MANIFEST.in)


class BuildPyWithBundle(build_py):
    """build_py, then the copy of the checkout's files."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / BUNDLED
        shutil.rmtree(target, ignore_errors=True)  # nothing left over from an earlier build in the same folder
        for pattern in FILES:
            sources = sorted(ROOT.glob(pattern))
            if not sources:
                raise FileNotFoundError(f"{ROOT / pattern}: the wheel must carry it (see {Path(__file__).name})")
            for source in sources:
                copy = target / source.relative_to(ROOT)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)


setup(cmdclass={"build_py": BuildPyWithBundle})
