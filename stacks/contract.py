"""What the stacks share with the operator CLI, in a module free of CDK imports.

Importing the CDK starts its Node.js runtime (seconds, and an end-of-life banner on Node 20), so the CLI
(``dogbreeds/ops``) reads these names from here instead of keeping copies of them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# The training/ code package (train.py, inference.py, metrics.py, ...): not a Python package.
CODE_DIR = Path(__file__).resolve().parent.parent / "training"


@dataclass(frozen=True)
class ArtifactPrefixes:
    """Where each kind of object lives in the artifact bucket (each ends with '/')."""

    datasets: str = "datasets/dogImages/"
    pretrained: str = "pretrained/"
    models: str = "models/"
    checkpoints: str = "checkpoints/"
    ec2_models: str = "ec2-models/"


PREFIXES = ArtifactPrefixes()

# What the training pipeline's execution input accepts under "hyperparameters", each an option of
# train.py; the state machine checks their values (stacks/training_pipeline.py).
HYPERPARAMETERS = (
    "learning_rate",
    "batch_size",
    "backbone",
    "trainable",
    "patience",
    "seed",
    "image_size",
    "amp",
    "channels_last",
    "augment",
)


def load_metrics_module() -> ModuleType:
    """training/metrics.py, the one definition of the metric lines (training/ is not a package).

    Raises FileNotFoundError when the file is not there (a CLI installed away from its checkout).
    """
    path = CODE_DIR / "metrics.py"
    spec = importlib.util.spec_from_file_location("dogbreeds_training_metrics", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
