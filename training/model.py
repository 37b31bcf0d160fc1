"""The network and the model artifact, shared by train.py and inference.py.

``save_artifact`` and ``save_serving_code`` write the model folder that SageMaker tars into ``model.tar.gz``;
``load_artifact`` rebuilds the network from it with no network access. The artifact's layout, and why the
serving code travels inside it: docs/training.md.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hyperparameters
import torch
from torch import nn
from torchvision import models, transforms

MODEL_FILE = "model.pth"
CLASSES_FILE = "classes.json"
CONFIG_FILE = "model_config.json"
ARTIFACT_FILES = (MODEL_FILE, CLASSES_FILE, CONFIG_FILE)
SERVING_CODE_DIR = "code"
# What inference.py imports from this folder, and itself: nothing of the training side ships to endpoints.
SERVING_FILES = ("inference.py", "model.py", "images.py", "hyperparameters.py")
CODE_SOURCE = Path(__file__).resolve().parent
MODEL_DIR_ENTRIES = (*ARTIFACT_FILES, SERVING_CODE_DIR)  # what train.py leaves in the model directory
# With --quantize int8, also: the int8 network (TorchScript, quantize.py) and its report (how it was made, what
# it costs in test accuracy), which inference.py reads to decide whether to serve it.
INT8_MODEL_FILE = "model_int8.pt"
INT8_REPORT_FILE = "model_int8.json"
INT8_FILES = (INT8_MODEL_FILE, INT8_REPORT_FILE)
# The int8 model is served only if its test top-1 accuracy is at most this many percentage points below fp32's.
INT8_MAX_TOP1_LOSS_POINTS = 1.0

# ImageNet statistics: torchvision's ResNet weights were trained on inputs normalized with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's constructor and ImageNet weights (pinned, not DEFAULT, which may change) of each ResNet.
_RESNETS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V2),
}
# backbone -> (constructor, pretrained weights enum member), for exactly the backbones train.py accepts.
BACKBONES = {name: _RESNETS[name] for name in hyperparameters.BACKBONES}
# RandomResizedCrop's ranges (torchvision's defaults, stated here because decode_size depends on them).
TRAIN_CROP_SCALE = (0.08, 1.0)
TRAIN_CROP_RATIO = (3 / 4, 4 / 3)
# A JPEG may be decoded at a reduced scale (libjpeg's 1/2, 1/4, 1/8) while the transform that follows
# still reduces it by at least this factor: the result then stays within a few levels of a full decode.
DECODE_MARGIN = 2


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network and its input pipeline."""

    backbone: str
    num_classes: int
    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    format_version: int = field(default=1)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r} is not one of {', '.join(BACKBONES)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not 32 <= self.image_size <= self.resize_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be at least 32 and at most resize_size ({self.resize_size})"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = json.loads(text)
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        return cls(**data)


def gpu_autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` (one of ``hyperparameters.AMP_MODES``) on the CUDA ``device``; None: fp32.

    ``auto`` is bf16 where the GPU computes it natively (compute capability 8.0 or newer: A10G, L4, A100,
    H100), else fp16 (T4, V100). ``bf16`` on an older GPU raises ValueError("bf16 needs ..."), which the
    callers complete with the name of their setting.
    """
    if mode == "off":
        return None
    native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
    if mode == "bf16" and not native_bf16:
        name = torch.cuda.get_device_name(device)
        raise ValueError(f"bf16 needs a GPU of compute capability 8.0 or newer, not a {name}")
    return torch.bfloat16 if mode == "bf16" or (mode == "auto" and native_bf16) else torch.float16


def build_model(config: ModelConfig) -> nn.Module:
    """A randomly initialized ResNet with a ``num_classes`` head in ``fc``."""
    constructor, _ = BACKBONES[config.backbone]
    model = constructor(weights=None)
    model.fc = nn.Linear(model.fc.in_features, config.num_classes)
    return model


def load_pretrained_backbone(model: nn.Module, config: ModelConfig, source: str | Path) -> str:
    """Load ImageNet weights into every layer but the head. Returns where they came from.

    ``source`` is a ``.pth`` file or a folder holding one (the optional ``pretrained`` channel), or
    ``"download"`` for torchvision's download (cached under ``$TORCH_HOME``).
    """
    _, weights = BACKBONES[config.backbone]
    if source == "download":
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as err:  # urllib raises several kinds; all mean the same to the user
            raise PretrainedWeightsError(
                f"could not download the {config.backbone} ImageNet weights ({weights.url}): {err}. "
                "Without internet access, put the file in the 'pretrained' input channel "
                "(`dogbreeds upload-weights`, or --pretrained PATH to a local .pth), "
                "or train from scratch with --pretrained none."
            ) from err
        origin = weights.url
    else:
        path = find_weights_file(Path(source), config.backbone)
        state = torch.load(path, map_location="cpu", weights_only=True)
        origin = str(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
        raise PretrainedWeightsError(
            f"the weights in {origin} do not fit {config.backbone}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return origin


def find_weights_file(source: Path, backbone: str) -> Path:
    """``source`` itself, or the one ``<backbone>*.pth`` file in the folder ``source``."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise PretrainedWeightsError(f"pretrained weights {source} do not exist")
    candidates = sorted(source.glob(f"{backbone}*.pth"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in sorted(source.glob("*.pth"))) or "no .pth file"
        raise PretrainedWeightsError(
            f"expected exactly one {backbone}*.pth file in {source} (torchvision's file name, for example "
            f"{Path(BACKBONES[backbone][1].url).name}); found {found}"
        )
    return candidates[0]


def set_trainable(model: nn.Module, trainable: str) -> list[nn.Parameter]:
    """Freeze what should not train and return the parameters that should.

    ``head``: only ``fc``; ``last_block``: ``layer4`` and ``fc``; ``all``: everything.
    """
    if trainable not in hyperparameters.TRAINABLE:
        raise ValueError(f"trainable must be one of {', '.join(hyperparameters.TRAINABLE)}, got {trainable!r}")
    train_prefixes = {"head": ("fc.",), "last_block": ("layer4.", "fc."), "all": ("",)}[trainable]
    params = []
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(train_prefixes)
        if param.requires_grad:
            params.append(param)
    return params


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The ResNet ``model`` as two modules sharing its parameters: the backbone (every layer before ``fc``,
    giving the pooled, flattened features) and the head (``fc``); ``head(backbone(x))`` is ``model(x)``."""
    *layers, head = model.children()
    if head is not model.fc:
        raise ValueError(f"expected a ResNet whose last child is fc, got {type(model).__name__}")
    return nn.Sequential(*layers, nn.Flatten(1)), head


def decode_size(config: ModelConfig, *, augment: bool) -> int:
    """The short side, in pixels, that an image needs for ``train_transform`` (``augment``) or ``eval_transform``.

    A larger JPEG can be decoded at a reduced scale down to it (``Image.draft``) with a negligible change
    in what the network sees, since the transform still reduces it ``DECODE_MARGIN`` times or more:
    - evaluation resizes the short side to ``resize_size``: ``DECODE_MARGIN * resize_size`` (512 for 224);
    - training's smallest random crop has sides of ``sqrt(scale * ratio)`` of the image's (scale 0.08,
      ratio 3/4): about a quarter of the short side, so 8.2 times ``image_size`` (1829 for 224): only
      very large photos are decoded at a reduced scale for training.
    """
    if not augment:
        return DECODE_MARGIN * config.resize_size
    smallest_crop_side = math.sqrt(TRAIN_CROP_SCALE[0] * TRAIN_CROP_RATIO[0])
    return math.ceil(DECODE_MARGIN * config.image_size / smallest_crop_side)


def train_transform(config: ModelConfig) -> transforms.Compose:
    """Augmentation for training: random resized crop, horizontal flip, normalization."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                config.image_size, scale=TRAIN_CROP_SCALE, ratio=TRAIN_CROP_RATIO, antialias=True
            ),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(config.mean, config.std),
        ]
    )


def eval_transform(config: ModelConfig) -> transforms.Compose:
    """Evaluation and inference: resize the short side, center crop, normalization."""
    return transforms.Compose(
        [
            transforms.Resize(config.resize_size, antialias=True),
            transforms.CenterCrop(config.image_size),
            transforms.ToTensor(),
            transforms.Normalize(config.mean, config.std),
        ]
    )


_CLASS_FOLDER = re.compile(r"^\d+[._-]")


def readable_label(class_name: str) -> str:
    """``"042.Carolina_dog"`` -> ``"Carolina dog"``: drop the index prefix, underscores to spaces."""
    return _CLASS_FOLDER.sub("", class_name).replace("_", " ").strip() or class_name


def save_artifact(model_dir: Path, model: nn.Module, config: ModelConfig, class_names: list[str]) -> None:
    """Write the three artifact files; ``model`` must be unwrapped (not DDP), on any device."""
    if len(class_names) != config.num_classes:
        raise ValueError(f"{len(class_names)} class names for {config.num_classes} classes")
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, model_dir / MODEL_FILE)
    (model_dir / CLASSES_FILE).write_text(json.dumps(class_names, indent=2))
    (model_dir / CONFIG_FILE).write_text(config.to_json())


def save_serving_code(model_dir: Path, source: Path = CODE_SOURCE) -> Path:
    """Copy ``SERVING_FILES`` from ``source`` (this folder) into ``<model_dir>/code/`` and return that folder."""
    missing = [name for name in SERVING_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the serving code in {source} lacks {', '.join(missing)}")
    code_dir = Path(model_dir) / SERVING_CODE_DIR
    code_dir.mkdir(parents=True, exist_ok=True)
    for name in SERVING_FILES:
        shutil.copyfile(source / name, code_dir / name)
    return code_dir


def load_artifact(model_dir: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelConfig, list[str]]:
    """Rebuild the network from an artifact folder, with no network access; returns it in eval mode."""
    model_dir = Path(model_dir)
    missing = [name for name in ARTIFACT_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"model artifact in {model_dir} lacks {', '.join(missing)}")
    config = ModelConfig.from_json((model_dir / CONFIG_FILE).read_text())
    class_names = json.loads((model_dir / CLASSES_FILE).read_text())
    if len(class_names) != config.num_classes:
        raise ValueError(f"{CLASSES_FILE} has {len(class_names)} names for {config.num_classes} classes")
    model = build_model(config)
    state = torch.load(model_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, config, class_names
