"""What the stacks share with the operator CLI, in a module free of CDK imports.

Importing the CDK starts its Node.js runtime (seconds, and an end-of-life banner on Node 20), so the CLI
(``dogbreeds/ops``) reads these names from here instead of keeping copies of them.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from dogbreeds_stacks.instances import serving_environment

if TYPE_CHECKING:
    from dogbreeds_stacks.settings import Settings


def _checkout() -> Path | None:
    """The app's checkout, when these modules run from one (an editable install, the tests, ``cdk synth``)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "cdk.json").is_file() and (root / "training").is_dir() else None


# The checkout, or None for a wheel installed away from it: then cdk.json (the settings' defaults) and
# training/'s modules are read from the copies the wheel carries (setup.py), and the commands that need the
# checkout itself (`npx cdk` runs there) say so.
CHECKOUT = _checkout()
SOURCE = CHECKOUT or Path(__file__).resolve().parent / "bundled"
CDK_JSON = SOURCE / "cdk.json"
# The training/ code package (train.py, inference.py, metrics.py, ...): not a Python package.
CODE_DIR = SOURCE / "training"


@dataclass(frozen=True)
class ArtifactPrefixes:
    """Where each kind of object lives in the artifact bucket (each ends with '/')."""

    datasets: str = "datasets/dogImages/"
    pretrained: str = "pretrained/"
    models: str = "models/"
    checkpoints: str = "checkpoints/"
    ec2_models: str = "ec2-models/"
    # The backbone's features of head-only runs, one folder per content-addressed key (training/feature_store.py).
    features: str = "features/"


PREFIXES = ArtifactPrefixes()

# The training pipeline's state whose training job stores the features every head-only trial reads (not a model).
FEATURE_EXTRACTION_STATE = "Extract features"

# What the approved-package parameter holds until a model package has been approved: the endpoint stack
# refuses to deploy while it is there (a CloudFormation rule, checked before any resource).
NOT_APPROVED = "none: no model package has been approved yet"

# The classes of the dogImages data set: the most predictions a request can ask for.
DOG_BREEDS = 133
# Where the model container finds code/ of the extracted model.tar.gz, and the serving program in it.
SERVING_CODE_DIR = "/opt/ml/model/code"
INFERENCE_PROGRAM = "inference.py"


def load_training_module(name: str) -> ModuleType:
    """``training/<name>.py`` (training/ is shipped code, not a package), loaded once.

    Raises FileNotFoundError when the file is not there (a CLI installed away from its checkout).
    """
    if name in _LOADED:
        return _LOADED[name]
    path = CODE_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"dogbreeds_training_{name}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    _LOADED[name] = module
    return module


_LOADED: dict[str, ModuleType] = {}


def load_metrics_module() -> ModuleType:
    """training/metrics.py, the one definition of the metric lines."""
    return load_training_module("metrics")


def training_hyperparameters() -> ModuleType:
    """training/hyperparameters.py, the one definition of what train.py accepts."""
    return load_training_module("hyperparameters")


def model_environment(settings: Settings, region: str) -> dict[str, str]:
    """The endpoint model's environment, as the endpoint stack sets it and the local demo serves it."""
    return {
        "SAGEMAKER_PROGRAM": INFERENCE_PROGRAM,
        "SAGEMAKER_SUBMIT_DIRECTORY": SERVING_CODE_DIR,
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": region,
        "TOP_K": str(settings.top_k),
        "MAX_DECODE_BYTES": str(settings.endpoint_max_decode_mb * 1024 * 1024),
        "MAX_JPEG_SCANS": str(settings.endpoint_max_jpeg_scans),
        "INFERENCE_PRECISION": settings.inference_precision,
        # On a CPU type: the model server's workers and each one's OpenMP threads, workers x threads = the vCPUs.
        **serving_environment(settings.endpoint_instance_type),
    }


def lambda_environment(settings: Settings) -> dict[str, str]:
    """The invoker Lambda's environment, as the invoker stack sets it and the local demo runs it."""
    s = settings
    return {
        "ENDPOINT_NAME": s.endpoint_name,
        "MAX_IMAGE_BYTES": str(s.lambda_max_image_mb * 1024 * 1024),
        "ALLOW_HTTP_URLS": str(s.lambda_allow_http_urls).lower(),
        "FETCH_TIMEOUT_SECONDS": str(s.lambda_fetch_timeout_seconds),
        "ENDPOINT_TIMEOUT_SECONDS": str(s.lambda_endpoint_timeout_seconds),
        "ENDPOINT_MAX_ATTEMPTS": str(s.lambda_endpoint_max_attempts),
        # How long API Gateway waits for the function: a retry that would end later is not started.
        "API_TIMEOUT_SECONDS": str(s.api_integration_timeout_seconds),
    }
