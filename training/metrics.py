"""The metric lines train.py prints, and the one regex for each.

This is the only place they are defined: train.py prints with ``metric_line``; the training stack
reads ``METRIC_REGEXES`` for the SageMaker metric definitions, the tuning objective and the
quality gate; the tests check that the regexes match what the script printed.

A line looks like ``epoch=3; train_loss=0.8123; train_accuracy=0.7012;`` (each value ends
with ``;``, so ``valid_loss=`` never matches inside ``best_valid_loss=``).
"""

from __future__ import annotations

import math
import re

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

# name -> regex with the value as its first group (SageMaker's MetricDefinitions contract).
METRIC_REGEXES = {
    name: rf"\b{name}={_NUMBER};"
    for name in (
        "epoch",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_accuracy",
        "test_loss",
        "test_accuracy",
        "epoch_seconds",
        "images_per_second",
    )
}
# The tuner minimizes this; its last value in a job is the job's best validation loss (train.py
# prints it once more at the end, after restoring the best epoch's weights).
TUNING_OBJECTIVE = "valid_loss"
QUALITY_GATE_METRIC = "test_accuracy"


def metric_line(**values: float) -> str:
    """``metric_line(epoch=1, valid_loss=0.5)`` -> ``"epoch=1; valid_loss=0.5;"``."""
    parts = []
    for name, value in values.items():
        if name not in METRIC_REGEXES:
            raise KeyError(f"{name} is not a documented metric: {', '.join(METRIC_REGEXES)}")
        if not math.isfinite(value):
            raise ValueError(f"{name}={value} is not finite")
        text = str(int(value)) if name == "epoch" else f"{value:.6g}"
        parts.append(f"{name}={text};")
    return " ".join(parts)


def parse_metrics(text: str) -> dict[str, list[float]]:
    """Every value of every metric found in ``text`` (a log), in order, as SageMaker would read them."""
    return {name: [float(m) for m in re.findall(regex, text)] for name, regex in METRIC_REGEXES.items()}
