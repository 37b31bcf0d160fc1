"""What train.py accepts for each hyperparameter the pipeline and the settings can set: one definition.

train.py's argument parser takes its types, defaults and allowed values from here; the stacks load this
file (it imports nothing outside the standard library) for the settings' checks and for the training
pipeline's input checks, so that the three can never disagree.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
TRAINABLE = ("head", "last_block", "all")
# Mixed precision of training: train.py's --amp.
AMP_MODES = ("auto", "bf16", "fp16", "off")
# Serving precision: the setting inference_precision, inference.py's INFERENCE_PRECISION, the demo's --precision.
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# What train.py writes beside the fp32 weights at the end of training: nothing, or an int8 model (quantize.py).
QUANTIZE = ("none", "int8")

_TRUE, _FALSE = ("true", "1"), ("false", "0")


@dataclass(frozen=True)
class WholeNumber:
    low: int
    high: int

    @property
    def accepted(self) -> str:
        return f"a whole number from {self.low} to {self.high}"

    def accepts(self, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def parse(self, text: str) -> int:
        return _parsed_number(self, text, int)


@dataclass(frozen=True)
class OpenInterval:
    """A number strictly between ``low`` and ``high``."""

    low: float
    high: float

    @property
    def accepted(self) -> str:
        return f"a number above {_number(self.low)} and below {_number(self.high)}"

    def accepts(self, value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and self.low < value < self.high

    def parse(self, text: str) -> float:
        return _parsed_number(self, text, float)


@dataclass(frozen=True)
class OneOf:
    values: tuple[str, ...]

    @property
    def accepted(self) -> str:
        return "one of " + ", ".join(self.values)

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and value in self.values

    def parse(self, text: str) -> str:
        if not self.accepts(text):
            raise argparse.ArgumentTypeError(f"expected {self.accepted}, got {_quoted(text)}")
        return text


@dataclass(frozen=True)
class TrueFalse:
    """true or false; as text in any case (SageMaker's toolkit turns JSON true into True), 1 and 0 too."""

    @property
    def accepted(self) -> str:
        return "true or false"

    def accepts(self, value: object) -> bool:
        return isinstance(value, bool)

    def parse(self, text: str) -> bool:
        word = text.strip().lower()
        if word not in _TRUE + _FALSE:
            raise argparse.ArgumentTypeError(f"expected {self.accepted}, got {_quoted(text)}")
        return word in _TRUE


@dataclass(frozen=True)
class TrueFalseAuto:
    """true, false or auto, parsed to the lower-case word."""

    @property
    def accepted(self) -> str:
        return 'true, false or "auto"'

    def accepts(self, value: object) -> bool:
        return isinstance(value, bool) or value == "auto"

    def parse(self, text: str) -> str:
        word = text.strip().lower()
        if word == "auto":
            return word
        if word not in _TRUE + _FALSE:
            raise argparse.ArgumentTypeError(f"expected {self.accepted}, got {_quoted(text)}")
        return "true" if word in _TRUE else "false"


Kind = WholeNumber | OpenInterval | OneOf | TrueFalse | TrueFalseAuto


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    kind: Kind
    default: object
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    h.name: h
    for h in (
        Hyperparameter("epochs", WholeNumber(1, 1000), 10, "most epochs to train"),
        Hyperparameter(
            "learning_rate", OpenInterval(0.0, 1.0), 0.01, "SGD learning rate at the start of the cosine schedule"
        ),
        Hyperparameter(
            "batch_size",
            WholeNumber(1, 4096),
            64,
            "images per batch on each process; the global batch is this times the number of processes",
        ),
        Hyperparameter("backbone", OneOf(BACKBONES), "resnet50", "ResNet backbone"),
        Hyperparameter(
            "trainable",
            OneOf(TRAINABLE),
            "last_block",
            "what is fine-tuned: head (fc), last_block (layer4 and fc) or all",
        ),
        Hyperparameter(
            "patience",
            WholeNumber(0, 1000),
            3,
            "stop after this many epochs without a lower valid loss; 0 never stops early",
        ),
        Hyperparameter("seed", WholeNumber(0, 2**31 - 1), 0, "seed of initialization, data order and augmentation"),
        Hyperparameter("image_size", WholeNumber(32, 1024), 224, "training crop size in pixels"),
        Hyperparameter(
            "amp",
            OneOf(AMP_MODES),
            "auto",
            "mixed precision: auto (bf16 on GPUs that support it, else fp16 with a gradient scaler; off on CPU), "
            "bf16, fp16 or off",
        ),
        Hyperparameter(
            "channels_last", TrueFalse(), True, "channels-last memory format for the network and its inputs"
        ),
        Hyperparameter(
            "augment",
            TrueFalseAuto(),
            "auto",
            "random resized crops and horizontal flips of the training images (else resize and center crop, as "
            "in evaluation); auto: true unless the features are cached",
        ),
        Hyperparameter(
            "quantize",
            OneOf(QUANTIZE),
            "none",
            "at the end of training, also write an int8 model for CPU endpoints (torch.ao static quantization, "
            "x86 backend, calibrated on valid images) and measure its test accuracy against fp32",
        ),
    )
}

# What the pipeline's execution input accepts under "hyperparameters" (epochs is a field of its own there).
PIPELINE_HYPERPARAMETERS = tuple(name for name in HYPERPARAMETERS if name != "epochs")
# Chosen by the tuning job when tuning is on.
TUNED = ("learning_rate", "batch_size")


def _parsed_number(kind: WholeNumber | OpenInterval, text: str, convert: type) -> int | float:
    """``text`` as ``convert`` (int or float), or argparse's error naming what ``kind`` accepts."""
    try:
        value = convert(text.strip())
    except ValueError:
        value = None
    if value is None or not kind.accepts(value):
        raise argparse.ArgumentTypeError(f"expected {kind.accepted}, got {_quoted(text)}")
    return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _quoted(text: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return repr(shown)
