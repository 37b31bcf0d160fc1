"""train.py accepts exactly the values hyperparameters.py says, the contract the settings and the pipeline check.

Values, not names: for each hyperparameter, the values at the edges of what the contract accepts (JSON values,
as the settings and the pipeline's input hold them) reach train.py's parser as the SageMaker toolkit passes
them (``str`` of the JSON-decoded value: ``True`` for true) and are accepted with that meaning; values just
outside are refused by train.py with its own message and argparse's exit status 2.
"""

from __future__ import annotations

import math

import pytest
from hyperparameters import HYPERPARAMETERS, OneOf, OpenInterval, TrueFalse, TrueFalseAuto, WholeNumber

import train
from tests.training.running import train_here


def edges(kind: object) -> tuple[list[object], list[object]]:
    """Values the contract accepts at its edges, and values just outside it."""
    match kind:
        case WholeNumber(low=low, high=high):
            return [low, high], [low - 1, high + 1, low + 0.5]
        case OpenInterval(low=low, high=high):
            return [math.nextafter(low, high), math.nextafter(high, low)], [low, high, low - 1, high + 1]
        case OneOf(values=values):
            return list(values), [values[0].upper(), f"{values[-1]}x", ""]
        case TrueFalse():
            return [True, False], ["yes", 2, "auto"]
        case TrueFalseAuto():
            return [True, False, "auto"], ["yes", 2, "sometimes"]
    raise AssertionError(f"a new kind in hyperparameters.py needs its edge values here: {kind!r}")


def meaning(kind: object, value: object) -> object:
    """What train.py's option holds for the contract's ``value``: the value itself, or true/false/auto as a word."""
    if isinstance(kind, TrueFalseAuto):
        return value if value == "auto" else str(value).lower()
    return value


def flags(name: str) -> str:
    """How argparse names the option in its messages."""
    dashes = "--" + name.replace("_", "-")
    return dashes if "_" not in name else f"{dashes}/--{name}"


@pytest.mark.parametrize("name", list(HYPERPARAMETERS))
def test_train_py_accepts_the_contract_s_edge_values_and_refuses_those_just_outside(name: str) -> None:
    kind = HYPERPARAMETERS[name].kind
    accepted, refused = edges(kind)
    parser = train.get_args_parser()
    for value in accepted:
        assert kind.accepts(value), (name, value)
        # Both spellings: the toolkit passes --batch_size, people type --batch-size.
        for flag in (f"--{name}", HYPERPARAMETERS[name].flag):
            assert getattr(parser.parse_args([flag, str(value)]), name) == meaning(kind, value), (flag, value)
    for value in refused:
        assert not kind.accepts(value), (name, value)
        result = train_here(f"--{name}", str(value))
        assert result.returncode == 2, (name, value)
        expected = f"train.py: error: argument {flags(name)}: expected {kind.accepted}, got {str(value)!r}"
        assert result.error == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--patience", "-1"], "argument --patience: expected a whole number from 0 to 1000, got '-1'"),
        (["--patience", "1001"], "argument --patience: expected a whole number from 0 to 1000, got '1001'"),
        (["--batch_size", "0"], "argument --batch-size/--batch_size: expected a whole number from 1 to 4096, got '0'"),
        (
            ["--batch-size", "4097"],
            "argument --batch-size/--batch_size: expected a whole number from 1 to 4096, got '4097'",
        ),
        (["--epochs", "0"], "argument --epochs: expected a whole number from 1 to 1000, got '0'"),
        (["--epochs", "2.5"], "argument --epochs: expected a whole number from 1 to 1000, got '2.5'"),
        (
            ["--learning_rate", "0"],
            "argument --learning-rate/--learning_rate: expected a number above 0 and below 1, got '0'",
        ),
        (
            ["--learning-rate", "1"],
            "argument --learning-rate/--learning_rate: expected a number above 0 and below 1, got '1'",
        ),
        (
            ["--backbone", "resnet152"],
            "argument --backbone: expected one of resnet18, resnet34, resnet50, resnet101, got 'resnet152'",
        ),
        (["--trainable", "layer4"], "argument --trainable: expected one of head, last_block, all, got 'layer4'"),
        (["--amp", "fp8"], "argument --amp: expected one of auto, bf16, fp16, off, got 'fp8'"),
        (
            ["--image_size", "31"],
            "argument --image-size/--image_size: expected a whole number from 32 to 1024, got '31'",
        ),
        (["--augment", "sometimes"], "argument --augment: expected true, false or \"auto\", got 'sometimes'"),
    ],
)
def test_values_outside_the_contract_stop_train_py_with_its_message(argv: list[str], message: str) -> None:
    result = train_here(*argv)
    assert (result.returncode, result.stderr.splitlines()[-1]) == (2, f"train.py: error: {message}")
    assert result.stderr.startswith("usage: train.py ")


def test_the_contract_s_edges_are_accepted_as_the_toolkit_passes_them() -> None:
    argv = ["--patience", "0", "--batch_size", "4096", "--learning_rate", "0.999", "--epochs", "1000"]
    args = train.get_args_parser().parse_args([*argv, "--backbone", "resnet101", "--image_size", "1024"])
    assert (args.patience, args.batch_size, args.learning_rate, args.epochs) == (0, 4096, 0.999, 1000)
    assert (args.backbone, args.image_size) == ("resnet101", 1024)
    assert train.get_args_parser().parse_args(["--patience", "1000", "--batch-size", "1"]).batch_size == 1


def test_the_defaults_are_the_contract_s() -> None:
    args = train.get_args_parser().parse_args([])
    assert {name: getattr(args, name) for name in HYPERPARAMETERS} == {
        name: hyperparameter.default for name, hyperparameter in HYPERPARAMETERS.items()
    }


def test_the_help_states_what_each_hyperparameter_accepts_and_its_default() -> None:
    helps = {action.dest: action.help for action in train.get_args_parser()._actions}
    assert helps["patience"] == (
        "stop after this many epochs without a lower valid loss; 0 never stops early "
        "(a whole number from 0 to 1000; default: 3)"
    )
    assert helps["channels_last"].endswith("(true or false; default: true)")
    for name, hyperparameter in HYPERPARAMETERS.items():
        assert helps[name].startswith(hyperparameter.help), name
        assert f"({hyperparameter.kind.accepted}; default: " in helps[name], name
