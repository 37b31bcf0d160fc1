"""Local mode: the whole pipeline on this machine, with no AWS account and no Docker.

    python -m dogbreeds.local.demo [--templates cdk.out] [--data-dir dogImages] [--keep DIR] [-c KEY=VALUE] ...

``make demo`` synthesizes the app, then runs this. The steps:

1. templates: where ``cdk synth`` put the templates a deploy would use (``--templates``);
2. image set: a small generated one in the dogImages layout, or ``--data-dir``;
3. training job: the real SageMaker training toolkit runs train.py under a stand-in ``/opt/ml`` with the
   code archive the training stack uploads, under torchrun with ``--processes`` processes (the
   ``sagemaker_torch_distributed_enabled`` path); then the metrics table and the curves' path;
4. model.tar.gz packed as SageMaker packs a job's model folder, extracted as an endpoint instance does;
5. endpoint: the real inference toolkit's ``HandlerService`` on that folder (only TorchServe, the Java
   server, is a stand-in) behind a loopback SageMaker runtime, called once with a plain boto3 client; it serves
   in ``--precision`` (``INFERENCE_PRECISION``; int8 also has the job quantize the model), and says which;
6. Lambda: the real handler in its own process, with the invoker stack's environment (the settings:
   cdk.json, then ``-c``), called with ``{"url": ...}`` (an image on a loopback web server) and
   ``{"image_base64": ...}``;
7. REST API: a loopback front with the API's shape (``POST /v1/predict``, dogbreeds/local/apigateway.py) in
   front of that function: it checks SigV4 signatures (fake local credentials) with botocore's signer, the
   stage's throttle and the request model, and hands the function API Gateway's proxy events; called as
   ``dogbreeds predict`` calls the API (its signing and request code) with the photo's raw bytes and with a
   URL, then unsigned and wrongly signed (403). ``--serve`` keeps it running afterwards, for ``curl
   --aws-sigv4`` and ``dogbreeds predict --api-url``, until Ctrl-C.

Everything happens in a temporary folder, removed at the end unless ``--keep DIR``; every server and
child process is stopped, also after a failure or Ctrl-C. Exit status: 0 (also when Ctrl-C ends ``--serve``),
1 when a step failed (the message says which and why), 2 for a wrong option or setting, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import re
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dogbreeds.local import training_job
from dogbreeds.local.imagesets import DEFAULT_SIZE, SPLITS, image_for_class, make_image_set
from dogbreeds.local.packaging import deploy_model, package_model
from dogbreeds_stacks.contract import lambda_environment, model_environment, training_hyperparameters
from dogbreeds_stacks.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]
LAMBDA_SOURCE = REPO / "lambda_src"
REGION = "us-east-1"
# The request signer needs credentials; the local runtime checks none. No profile or real key is read.
DUMMY_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
PHOTO_NAME = "Carolina-Dog-standing-outdoors.jpg"  # the name in the original test event
PHOTO_CLASS = "042.Carolina_dog"
# Classes of the generated image set, in the order they are taken (the photo's class first).
CLASS_POOL = (PHOTO_CLASS, "001.Affenpinscher", "103.Mastiff", "016.Beagle", "124.Poodle", "057.Dalmatian")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STEPS = 7
# What local mode changes in the function's environment: the image server is plain HTTP on loopback.
LOCAL_MODE_ENVIRONMENT = {"ALLOW_HTTP_URLS": "true", "LOCAL_MODE_ALLOW_LOOPBACK": "true"}


# train.py's own definition of its hyperparameters: the demo refuses what a training job would refuse.
_TRAIN = training_hyperparameters().HYPERPARAMETERS
PRECISIONS = training_hyperparameters().INFERENCE_PRECISIONS


class StepFailed(Exception):
    """A step could not finish; the message says why (and what to do)."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds.local.demo",
        description="The whole pipeline on this machine: train under the SageMaker training toolkit, package "
        "model.tar.gz as SageMaker does, serve it through the SageMaker inference toolkit behind a loopback "
        "SageMaker runtime, and call it through the Lambda handler. No AWS account, no Docker.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--templates",
        type=Path,
        default=None,
        metavar="DIR",
        help="the folder `cdk synth` wrote (make demo passes cdk.out); its templates are listed (default: not listed)",
    )
    parser.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, as with cdk synth -c (repeatable): the endpoint's and the Lambda's settings "
        "apply here (default: cdk.json's)",
    )
    add_image_set_arguments(parser)
    add_training_job_arguments(parser)
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="work in DIR (new or empty) and keep it: data, /opt/ml stand-ins, model.tar.gz, logs "
        "(default: a temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="what the endpoint computes in (the model's INFERENCE_PRECISION); int8 also has the training job "
        "quantize the model (quantize=int8) (default: the setting inference_precision, cdk.json's or -c's)",
    )
    parser.add_argument("--verbose", action="store_true", help="print the training toolkit's whole log")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after the last step, keep the local REST API (and the function, model and image server behind it) "
        "running until Ctrl-C, and print a curl --aws-sigv4 and a dogbreeds predict command for it (default: stop)",
    )
    return parser


def add_image_set_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("image set")
    data.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="an image set in the dogImages layout (train/, valid/, test/, one folder per class) "
        "(default: generate a small one)",
    )
    data.add_argument(
        "--classes",
        type=int,
        default=4,
        choices=range(2, len(CLASS_POOL) + 1),
        metavar=f"2..{len(CLASS_POOL)}",
        help="classes of the generated image set (default: %(default)s)",
    )
    data.add_argument(
        "--images-per-class",
        type=positive_int,
        default=32,
        metavar="N",
        help="training images per class of the generated set; valid and test get a quarter, at least 4 "
        "(default: %(default)s)",
    )
    data.add_argument(
        "--image",
        type=Path,
        default=None,
        metavar="FILE",
        help="the photo to classify at the end (default: a generated Carolina dog picture, or with --data-dir "
        "the first test image)",
    )


def add_training_job_arguments(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group("training job (train.py's hyperparameters)")
    job.add_argument("--backbone", default="resnet18", help="ResNet backbone (default: %(default)s)")
    job.add_argument(
        "--pretrained",
        default="none",
        metavar="none|download|PATH",
        help="ImageNet weights: none (random initialization, needs no internet), download, or a .pth file or a "
        "folder holding one, given to the job as its 'pretrained' channel (default: %(default)s)",
    )
    job.add_argument(
        "--epochs", type=_TRAIN["epochs"].kind.parse, default=6, metavar="N", help="epochs (default: %(default)s)"
    )
    job.add_argument(
        "--image-size",
        type=positive_int,
        default=32,
        metavar="PIXELS",
        help="training crop in pixels (default: %(default)s)",
    )
    job.add_argument(
        "--batch-size",
        type=_TRAIN["batch_size"].kind.parse,
        default=8,
        metavar="N",
        help="batch size per process (default: %(default)s)",
    )
    job.add_argument(
        "--learning-rate", type=float, default=0.01, metavar="LR", help="learning rate (default: %(default)s)"
    )
    job.add_argument(
        "--processes",
        type=positive_int,
        default=2,
        metavar="N",
        help="training processes: 2 or more run under torchrun (sagemaker_torch_distributed_enabled), "
        "1 runs the script directly (default: %(default)s)",
    )


@dataclass
class Console:
    """Numbered steps with timings, indented details, tables."""

    out: TextIO
    err: TextIO
    started: float = field(default_factory=time.perf_counter)
    step_started: float = 0.0
    step_number: int = 0

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def detail(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.say(f"      {line}")

    def step(self, title: str) -> None:
        self.step_number += 1
        self.step_started = time.perf_counter()
        self.say(f"[{self.step_number}/{STEPS}] {title}")

    def step_done(self) -> None:
        self.detail(f"done in {time.perf_counter() - self.step_started:.1f} s")

    def error(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class Cleanup:
    """What was started, stopped in reverse order; Ctrl-C cannot cut the stopping short."""

    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    done: list[str] = field(default_factory=list)

    def add(self, description: str, stop: Callable[[], object]) -> None:
        def run() -> None:
            try:
                stop()
            except Exception as err:  # the other things must still be stopped
                self.done.append(f"FAILED: {description} ({type(err).__name__}: {err})")
            else:
                self.done.append(description)

        self.stack.callback(run)

    def run(self) -> list[str]:
        with _no_interruptions():
            self.stack.close()
        return self.done


@contextlib.contextmanager
def _no_interruptions() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up (where this thread can set signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass(frozen=True)
class ImageSet:
    root: Path
    classes: list[str]
    counts: dict[str, int]


@dataclass(frozen=True)
class Photo:
    path: Path
    expected: str | None  # the class folder it belongs to, where known


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    console = Console(sys.stdout, sys.stderr)
    try:
        settings = Settings.load(args.context)
    except SettingsError as err:
        for problem in err.problems:
            console.error(f"error: {problem}")
        return EXIT_USAGE
    args.precision = args.precision or settings.inference_precision
    problem = local_precision_problem(args.precision)
    if problem:
        console.error(f"error: {problem}")
        return EXIT_USAGE
    cleanup = Cleanup()
    try:
        work = prepare_work_folder(args.keep, cleanup)
        console.say("Local mode: the whole pipeline on this machine (no AWS account, no Docker)")
        console.say(f"work folder: {work}" + (" (kept)" if args.keep else " (removed at the end)"))
        run(args, settings, work, console, cleanup)
        status = 0
    except StepFailed as failure:
        where = f"step {console.step_number} failed: " if console.step_number else ""
        console.error(f"error: {where}{failure}")
        status = EXIT_FAILED
    except KeyboardInterrupt:
        where = f" during step {console.step_number}" if console.step_number else ""
        console.error(f"interrupted{where}; cleaning up")
        status = EXIT_INTERRUPTED
    finally:
        done = cleanup.run()
    if done:
        console.say(f"cleaned up: {'; '.join(done)}")
    if args.keep is not None:
        console.say(f"kept: {args.keep.resolve()}")
    if status == 0:
        console.say(f"Done in {console.elapsed():.1f} s.")
    return status


def local_precision_problem(precision: str) -> str | None:
    """Why this machine's endpoint (on its GPU if it has one, else its CPU) cannot serve in ``precision``, or None."""
    import torch  # here, not at the top: it takes seconds to import

    gpu = torch.cuda.is_available()
    if precision == ("int8" if gpu else "fp16"):
        needs, has = ("a CPU", "a GPU") if gpu else ("a GPU", "no GPU")
        accepted = [p for p in PRECISIONS if p != precision]
        return (
            f"--precision {precision} needs {needs}, and this machine, which serves the local endpoint, has {has}: "
            f"accepted here are {', '.join(accepted[:-1])} and {accepted[-1]}"
        )
    return None


def prepare_work_folder(keep: Path | None, cleanup: Cleanup) -> Path:
    if keep is None:
        work = Path(tempfile.mkdtemp(prefix="dogbreeds-local-"))
        cleanup.add(f"removed {work}", lambda: shutil.rmtree(work, ignore_errors=True))
        return work
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise StepFailed(f"--keep {keep}: the folder must be new or empty")
    keep.mkdir(parents=True, exist_ok=True)
    return keep.resolve()


def run(args: argparse.Namespace, settings: Settings, work: Path, console: Console, cleanup: Cleanup) -> None:
    console.step("Templates a deploy would use")
    show_templates(args.templates, console)
    console.step_done()

    console.step("Image set in the dogImages layout")
    images = prepare_image_set(args, work, console)
    photo = prepare_photo(args, images, work / "web")
    console.step_done()

    mode = f"{args.processes} processes under torchrun" if args.processes > 1 else "1 process"
    console.step(f"Training job: the SageMaker training toolkit runs train.py ({mode})")
    job = run_training_job(args, images, work, console, cleanup)
    metrics = show_metrics(job, console)
    console.step_done()

    console.step("model.tar.gz as SageMaker packs it, extracted as an endpoint instance does")
    model_dir = package_and_deploy(job, work, console)
    console.step_done()

    console.step("Endpoint: the SageMaker inference toolkit behind a loopback SageMaker runtime")
    runtime_url = start_endpoint(model_dir, settings, (args.precision, metrics.get("int8")), console, cleanup)
    invoke_endpoint_directly(runtime_url, settings.names.endpoint, photo, console)
    console.step_done()

    console.step("Lambda handler: the original test event's shape, then image bytes")
    function, files = call_lambda(runtime_url, photo, settings, work, console, cleanup)
    console.step_done()

    console.step("REST API: a loopback front with the API's shape, called as dogbreeds predict calls it")
    front = call_api(function, files.url_of(photo.path.name), photo, settings, console, cleanup)
    console.step_done()
    if args.serve:
        serve_until_interrupted(front, photo, settings, console)


# 1. Templates ----------------------------------------------------------------------------------------


def show_templates(folder: Path | None, console: Console) -> None:
    if folder is None:
        console.detail("not listed (`make demo` synthesizes the app first and passes --templates cdk.out)")
        return
    templates = sorted(folder.glob("*.template.json"))
    if not templates:
        raise StepFailed(f"no *.template.json in {folder}: run `make synth` first")
    console.detail(f"{len(templates)} stacks synthesized by `cdk synth` (cdk-nag checked) in {folder}/:")
    width = max(len(path.name) for path in templates)
    for path in templates:
        resources = json.loads(path.read_text()).get("Resources", {})
        console.detail(f"  {path.name:<{width}}  {len(resources):>3} resources")


# 2. Image set ----------------------------------------------------------------------------------------


def prepare_image_set(args: argparse.Namespace, work: Path, console: Console) -> ImageSet:
    if args.data_dir is not None:
        images = read_image_set(args.data_dir.resolve())
        console.detail(f"using {images.root}")
    else:
        classes = tuple(sorted(CLASS_POOL[: args.classes]))
        per_split = {"train": args.images_per_class}
        per_split |= dict.fromkeys(("valid", "test"), max(4, args.images_per_class // 4))
        root = make_image_set(work / "dogImages", classes=classes, per_split=per_split)
        images = read_image_set(root)
        console.detail(f"generated in {root} ({DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]} px, a colour and stripes per class)")
    console.detail(
        f"{len(images.classes)} classes ({', '.join(images.classes[:6])}{', ...' if len(images.classes) > 6 else ''})"
    )
    console.detail(", ".join(f"{split} {images.counts[split]}" for split in SPLITS) + " images")
    return images


def read_image_set(root: Path) -> ImageSet:
    """Class names and image counts; the full check is train.py's, before the job spends anything."""
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise StepFailed(f"{root} is not in the dogImages layout: no {', '.join(f'{s}/' for s in missing)} folder")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    counts = {
        split: sum(1 for path in (root / split).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES) for split in SPLITS
    }
    if len(classes) < 2:
        raise StepFailed(f"{root / 'train'} has {len(classes)} class folder(s); at least 2 are needed")
    return ImageSet(root, classes, counts)


def prepare_photo(args: argparse.Namespace, images: ImageSet, web: Path) -> Photo:
    """The photo the endpoint and the Lambda classify, in the web server's folder."""
    web.mkdir(parents=True)
    if args.image is not None:
        if not args.image.is_file():
            raise StepFailed(f"--image {args.image} is not a file")
        return Photo(Path(shutil.copy(args.image, web / args.image.name)), None)
    if args.data_dir is None:  # a picture of the Carolina dog class, drawn as the image set's were
        index = images.classes.index(PHOTO_CLASS)
        path = web / PHOTO_NAME
        image_for_class(index, DEFAULT_SIZE, random.Random(2024)).save(path, quality=90)
        return Photo(path, PHOTO_CLASS)
    matching = [name for name in images.classes if "carolina" in name.lower()] or images.classes
    for name in matching:
        candidates = sorted(p for p in (images.root / "test" / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if candidates:
            return Photo(Path(shutil.copy(candidates[0], web / candidates[0].name)), name)
    raise StepFailed(f"no test image in {images.root / 'test'}; give one with --image")


# 3. Training job -------------------------------------------------------------------------------------


def hyperparameters(args: argparse.Namespace) -> dict[str, object]:
    values: dict[str, object] = {
        "backbone": args.backbone,
        "pretrained": "auto" if _is_weights_path(args.pretrained) else args.pretrained,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "workers": 0,  # DataLoader workers: the CPU cores go to the training processes
    }
    if getattr(args, "precision", None) == "int8":  # as the pipeline's final job gets it for an int8 endpoint
        values["quantize"] = "int8"
    if args.processes > 1:
        values["sagemaker_torch_distributed_enabled"] = True
        # Processes per host: the number of GPUs on a GPU instance; this many CPU processes here.
        values["sagemaker_mpi_num_of_processes_per_host"] = args.processes
    return values


def _is_weights_path(value: str) -> bool:
    return value not in ("none", "download", "auto")


def run_training_job(
    args: argparse.Namespace, images: ImageSet, work: Path, console: Console, cleanup: Cleanup
) -> training_job.TrainingJob:
    try:
        archive = training_job.build_code_archive(work / "build")
    except training_job.JobError as err:
        raise StepFailed(str(err)) from err
    channels = {"training": images.root}
    if _is_weights_path(args.pretrained):
        weights = Path(args.pretrained).resolve()
        if not weights.exists():
            raise StepFailed(f"--pretrained {args.pretrained}: no such file or folder")
        channels["pretrained"] = weights if weights.is_dir() else _folder_of_one(weights, work / "pretrained")
    job = training_job.lay_out_job(work / "opt-ml", channels, hyperparameters(args), archive)
    console.detail(f"code: {archive.name} (training/ packed as the training stack uploads it)")
    console.detail(f"/opt/ml stand-in: {job.base} (channels: {', '.join(channels)})")
    log_path = work / "training-job.log"
    console.detail(f"toolkit log: {log_path}")
    process = training_job.start_job(job)

    def stop_job() -> None:
        training_job.stop_process(process)
        if process.stdout is not None:
            process.stdout.close()

    cleanup.add("stopped the training job's processes", stop_job)
    progress = TrainingProgress(console, args.epochs, verbose=args.verbose)
    assert process.stdout is not None
    with log_path.open("w") as log:
        for line in process.stdout:
            log.write(line)
            progress.show(line.rstrip("\n"))
    status = process.wait()
    reason = job.failure_reason()
    if status != 0 or reason is not None or not job.success_file.exists():
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise StepFailed(
            f"the training job failed (toolkit exit status {status}).\n"
            f"FailureReason ({job.failure_file}):\n  {reason or '(no failure file)'}\n"
            f"last lines of {log_path}:\n{tail}"
        )
    return job


def _folder_of_one(weights: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / weights.name).symlink_to(weights)
    return folder


_METRIC = re.compile(r"\b(\w+)=([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf));")


@dataclass
class TrainingProgress:
    """The toolkit's lines that tell the story: the command it runs, the shards, one line per epoch."""

    console: Console
    epochs: int
    verbose: bool = False

    def show(self, line: str) -> None:
        if self.verbose:
            self.console.detail(f"| {line}")
            return
        text = re.sub(r"^\[rank \d+\] ", "", line)
        metrics = dict(_METRIC.findall(text))
        if "epoch" in metrics and "train_loss" in metrics:
            self.console.detail(
                f"epoch {metrics['epoch']}/{self.epochs}: train loss {float(metrics['train_loss']):.3f}, "
                f"accuracy {float(metrics['train_accuracy']):.2f}; valid loss {float(metrics['valid_loss']):.3f}, "
                f"accuracy {float(metrics['valid_accuracy']):.2f} ({float(metrics['epoch_seconds']):.1f} s)"
            )
        elif re.match(r"(\S*/)?(torchrun|python3?) .*\btrain\.py\b", line):  # what the toolkit runs
            self.console.detail("$ " + re.sub(r"^\S*/", "", line.strip()))
        elif any(part in line for part in ("this process's shard", "train.py: error:", "pretrained weights:", "int8:")):
            self.console.detail(line.strip())


def show_metrics(job: training_job.TrainingJob, console: Console) -> dict[str, Any]:
    """Print metrics.json as a table, and return it."""
    metrics_file = job.output_data_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    console.detail(f"metrics ({metrics_file}):")
    rows = [("epoch", "train loss", "train acc", "valid loss", "valid acc", "seconds")]
    for row in metrics["history"]:
        rows.append(
            (
                f"{row['epoch']}{' *' if row['epoch'] == metrics['best_epoch'] else ''}",
                f"{row['train_loss']:.3f}",
                f"{row['train_accuracy']:.3f}",
                f"{row['valid_loss']:.3f}",
                f"{row['valid_accuracy']:.3f}",
                f"{row['epoch_seconds']:.1f}",
            )
        )
    for line in table(rows, "lrrrrr"):
        console.detail(f"  {line}")
    console.detail(
        f"  test, weights of the best epoch (*) {metrics['best_epoch']}: loss {metrics['test_loss']:.3f}, "
        f"accuracy {metrics['test_accuracy']:.3f}"
    )
    curves = job.output_data_dir / "curves.png"
    console.detail(f"curves: {curves}" if curves.is_file() else "curves: none (matplotlib is not installed)")
    if "int8" in metrics:
        console.detail(f"  int8 model: {int8_summary(metrics['int8'])}")
    return metrics


def int8_summary(report: dict[str, Any]) -> str:
    """What quantize.py's report says of the int8 model: its test accuracy against fp32's, whether it is served."""
    verdict = "within" if report["within_limit"] else "more than"
    return (
        f"test accuracy {report['int8_test_accuracy']:.3f} against fp32 {report['fp32_test_accuracy']:.3f} on "
        f"{report['test_images']} images: {report['top1_loss_points']:.2f} points lost, {verdict} the "
        f"{report['max_top1_loss_points']:g} allowed; {report['graph']}, calibrated on {report['calibration_images']} "
        "valid images"
    )


def table(rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Columns under a header row, each left- (``l``) or right-aligned (``r``) as ``align`` says."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(align))]
    return [
        "  ".join(
            cell.ljust(width) if side == "l" else cell.rjust(width)
            for cell, width, side in zip(row, widths, align, strict=True)
        ).rstrip()
        for row in rows
    ]


# 4. Packaging ----------------------------------------------------------------------------------------


def package_and_deploy(job: training_job.TrainingJob, work: Path, console: Console) -> Path:
    archive = package_model(job.model_dir, work / "model.tar.gz")
    with tarfile.open(archive) as tar:
        names = [member.name for member in tar.getmembers() if member.isfile()]
    console.detail(f"{archive} ({archive.stat().st_size / 1e6:.1f} MB): the model folder's content at its root")
    console.detail("  " + ", ".join(names))
    model_dir = deploy_model(archive, work / "opt-ml-endpoint" / "model")
    console.detail(f"/opt/ml/model stand-in: {model_dir}")
    return model_dir


# 5. Endpoint -----------------------------------------------------------------------------------------


def start_endpoint(
    model_dir: Path,
    settings: Settings,
    precision: tuple[str, dict[str, Any] | None],
    console: Console,
    cleanup: Cleanup,
) -> str:
    """The worker on ``model_dir`` behind a loopback SageMaker runtime; ``precision``: the one to serve in, and the
    int8 model's report where the job quantized it (metrics.json's ``int8``)."""
    # Imported here, not at the top: torch and the toolkit take seconds to import, and steps 1-4 need neither.
    from dogbreeds.local.runtime import RuntimeServer
    from dogbreeds.local.serving import ModelWorker

    started = time.perf_counter()
    # The model's environment as the endpoint stack sets it (its code folder is the stand-in's), in --precision.
    requested, int8_report = precision
    environment = {**model_environment(settings, REGION), "INFERENCE_PRECISION": requested}
    worker = ModelWorker(model_dir, environment=environment)
    console.detail(
        f"HandlerService started on {model_dir} in {time.perf_counter() - started:.1f} s "
        "(SAGEMAKER_PROGRAM=inference.py imported from code/, model_fn called)"
    )
    show_precision(requested, worker.model.precision, int8_report, console)
    server = RuntimeServer({settings.names.endpoint: worker}).start()
    cleanup.add("stopped the SageMaker runtime server", server.stop)
    console.detail(f"SageMaker runtime: {server.url}, endpoint {settings.names.endpoint}")
    return server.url


def show_precision(requested: str, served: str, int8_report: dict[str, Any] | None, console: Console) -> None:
    """The precision the worker serves in, for the one asked; for int8, the model's accuracy cost."""
    console.detail(f"precision: served in {served} (INFERENCE_PRECISION={requested})")
    if requested == "int8" and int8_report is not None:
        console.detail(f"  int8 model: {int8_summary(int8_report)}")
    if requested == "int8" and served != "int8":
        console.detail("  not int8: the worker fell back to fp32 and logged why")


def runtime_client(url: str) -> Any:
    """A plain boto3 sagemaker-runtime client for ``url``: dummy credentials, no proxy, no retries."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=REGION, **DUMMY_CREDENTIALS)
    return session.client(
        "sagemaker-runtime", endpoint_url=url, config=Config(proxies={}, retries={"total_max_attempts": 1})
    )


def invoke_endpoint_directly(url: str, endpoint_name: str, photo: Photo, console: Console) -> None:
    client = runtime_client(url)
    body = photo.path.read_bytes()
    started = time.perf_counter()
    response = client.invoke_endpoint(
        EndpointName=endpoint_name, Body=body, ContentType="image/jpeg", Accept="application/json"
    )
    answer = json.loads(response["Body"].read())
    milliseconds = (time.perf_counter() - started) * 1000
    console.detail(
        f"boto3 invoke_endpoint({photo.path.name}, {len(body)} bytes, image/jpeg): "
        f"{milliseconds:.0f} ms, variant {response.get('InvokedProductionVariant')}"
    )
    model = answer["model"]
    console.detail(f"model: {model['backbone']}, {model['num_classes']} classes, version {model['version']}")
    show_predictions(answer["predictions"], photo, console)
    try:
        client.invoke_endpoint(EndpointName=endpoint_name, Body=b"not an image", ContentType="image/jpeg")
    except client.exceptions.ModelError as error:
        first_line = error.response.get("OriginalMessage", "").split("\n", 1)[0]
        console.detail(
            f"a body that is no image: ModelError, OriginalStatusCode {error.response.get('OriginalStatusCode')}"
        )
        console.detail(f"  {first_line}")
    else:
        raise StepFailed("the endpoint accepted a body that is no image")


def show_predictions(predictions: list[dict[str, Any]], photo: Photo, console: Console) -> None:
    rows = [("rank", "breed", "index", "probability")]
    rows += [
        (str(rank), p["label"], str(p["index"]), f"{p['probability']:.4f}") for rank, p in enumerate(predictions, 1)
    ]
    for line in table(rows, "rlrr"):
        console.detail(f"  {line}")
    if photo.expected:
        console.detail(f"  (the photo is of class {photo.expected})")


# 6. Lambda -------------------------------------------------------------------------------------------


def function_variables(settings: Settings, runtime_url: str) -> dict[str, str]:
    """The function's variables as the invoker stack sets them, then local mode's (the local runtime's URL)."""
    return {
        **lambda_environment(settings),
        **LOCAL_MODE_ENVIRONMENT,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime_url,
    }


def call_lambda(
    runtime_url: str,
    photo: Photo,
    settings: Settings,
    work: Path,
    console: Console,
    cleanup: Cleanup,
) -> tuple[Any, Any]:
    """The function's process and the image web server, both left running for the API's step."""
    from dogbreeds.local.fileserver import FileServer
    from dogbreeds.local.lambda_host import LambdaError, LambdaFunction

    files = FileServer(photo.path.parent).start()
    cleanup.add("stopped the image web server", files.stop)
    task_dir = work / "lambda" / "task"
    shutil.copytree(LAMBDA_SOURCE, task_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    environment = function_variables(settings, runtime_url)
    function = LambdaFunction(
        task_dir,
        "handler.handler",
        environment=environment,
        function_name=settings.names.lambda_function,
        region=REGION,
        memory_mb=settings.lambda_memory_mb,
        timeout_seconds=float(settings.lambda_timeout_seconds),
    ).start()
    cleanup.add("stopped the Lambda function's process", function.close)
    console.detail(f"function code: {task_dir} (lambda_src/ as deployed), handler handler.handler, own process")
    console.detail("environment: " + ", ".join(f"{k}={v}" for k, v in environment.items()))
    url = files.url_of(photo.path.name)
    events = [
        ({"url": url}, json.dumps({"url": url})),
        (
            {"image_base64": base64.b64encode(photo.path.read_bytes()).decode()},
            f'{{"image_base64": "<{photo.path.stat().st_size} bytes of {photo.path.name}, base64>"}}',
        ),
    ]
    for number, (event, shown) in enumerate(events):
        started = time.perf_counter()
        try:
            response = function.invoke(event)
        except LambdaError as error:
            raise StepFailed(f"the Lambda function failed: {error}\nits log:\n{function.log_text()[-3000:]}") from None
        milliseconds = (time.perf_counter() - started) * 1000
        console.detail(f"event {shown}")
        call = "cold start: the handler module imported" if number == 0 else "warm"
        show_lambda_response(response, f"{milliseconds:.0f} ms, {call}", photo, console, function.log_text)
    return function, files


def show_lambda_response(response: Any, duration: str, photo: Photo, console: Console, log: Callable[[], str]) -> None:
    if not isinstance(response, dict) or "statusCode" not in response:
        raise StepFailed(f"the Lambda function answered no HTTP response: {str(response)[:500]}")
    try:
        body = json.loads(response.get("body") or "null")
    except json.JSONDecodeError:
        body = response.get("body")
    status = response["statusCode"]
    if status != 200 or not isinstance(body, dict) or "predictions" not in body:
        raise StepFailed(f"the Lambda function answered {status}: {body}\nits log:\n{log()[-3000:]}")
    latency = body.get("latency_ms") or {}
    parts = ", ".join(f"{name} {value:.0f} ms" for name, value in latency.items() if isinstance(value, int | float))
    console.detail(f"  -> {status} in {duration}; the handler's latency_ms: {parts or 'not given'}")
    show_predictions(body["predictions"], photo, console)


# 7. REST API -----------------------------------------------------------------------------------------


def call_api(
    function: Any, image_url: str, photo: Photo, settings: Settings, console: Console, cleanup: Cleanup
) -> Any:
    """Start the local REST API in front of ``function`` and call it as ``dogbreeds predict`` does; the front."""
    from botocore.credentials import Credentials

    from dogbreeds.local.apigateway import LOCAL_ACCESS_KEY, LOCAL_CREDENTIALS, LOCAL_SECRET_KEY, LocalRestApi
    from dogbreeds.ops import predict
    from dogbreeds.ops.errors import OpsError

    def log_tail() -> str:
        return function.log_text()[-3000:]

    front = LocalRestApi(function.invoke, settings, region=REGION).start()
    cleanup.add("stopped the local REST API", front.stop)
    console.detail(f"POST {front.predict_url} (the invoker stack's PredictUrl output, on loopback)")
    console.detail(
        f"IAM authorization: SigV4 for execute-api in {REGION}, checked with botocore's signer against the local key "
        f"{LOCAL_ACCESS_KEY}; throttle {settings.api_rate_limit}/s, burst {settings.api_burst_limit}; the request "
        "model for JSON; binary media types for raw images"
    )
    if settings.api_auth != "iam":
        console.detail(
            f"(api_auth={settings.api_auth} is not emulated locally: the front checks SigV4, as api_auth=iam)"
        )
    signer = predict.SigV4Signer(LOCAL_CREDENTIALS, REGION)
    max_bytes = settings.lambda_max_image_mb * 1024 * 1024
    data = photo.path.read_bytes()
    for shown, source in (
        (f"the photo's raw bytes ({len(data)} bytes, {predict.media_type_of(data)})", str(photo.path)),
        (image_url, image_url),
    ):
        started = time.perf_counter()
        try:
            body = predict.via_api(front.predict_url, source, None, max_bytes, signer)
        except OpsError as error:
            raise StepFailed(f"the API answered: {error}\nthe function's log:\n{log_tail()}") from None
        milliseconds = (time.perf_counter() - started) * 1000
        console.detail(f"signed, {shown} -> 200 in {milliseconds:.0f} ms")
        if source == str(photo.path):
            show_predictions(body["predictions"], photo, console)
    unsigned = predict.api_request(front.predict_url, str(photo.path), None, max_bytes)
    wrong = predict.SigV4Signer(Credentials(LOCAL_ACCESS_KEY, "not-" + LOCAL_SECRET_KEY), REGION)
    for shown, request in (("unsigned", unsigned), ("signed with a wrong secret", wrong(unsigned))):
        answer = predict.call_api(request, timeout=30)
        if answer.status != 403:
            raise StepFailed(f"the local API answered {answer.status} to a request {shown}, not 403")
        console.detail(f"{shown} -> {answer.status} {answer.json().get('error')}")
    console.detail(
        f"access log: {len(front.access_log)} entries with the stage's fields, the last: "
        + json.dumps({k: v for k, v in front.access_log[-1].items() if v is not None})
    )
    return front


def api_commands(front: Any, photo: Photo, settings: Settings) -> list[str]:
    """A curl --aws-sigv4 and a dogbreeds predict command that call the local API as a client would."""
    import shlex

    from dogbreeds.local.apigateway import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY
    from dogbreeds.ops.predict import media_type_of

    curl = [
        "curl",
        "--aws-sigv4",
        f"aws:amz:{REGION}:execute-api",
        "--user",
        f"{LOCAL_ACCESS_KEY}:{LOCAL_SECRET_KEY}",
        "-H",
        f"Content-Type: {media_type_of(photo.path.read_bytes())}",
        "--data-binary",
        f"@{photo.path}",
        front.predict_url + "?top_k=3",
    ]
    cli = ["dogbreeds", "--region", REGION, *(["-c", "api_auth=iam"] if settings.api_auth != "iam" else [])]
    cli += ["predict", "--api-url", front.predict_url, str(photo.path)]
    keys = f"AWS_ACCESS_KEY_ID={LOCAL_ACCESS_KEY} AWS_SECRET_ACCESS_KEY={LOCAL_SECRET_KEY}"
    return [shlex.join(curl), f"{keys} {shlex.join(cli)}"]


def serve_until_interrupted(front: Any, photo: Photo, settings: Settings, console: Console) -> None:
    """Keep everything running for other clients until Ctrl-C (or SIGTERM), which ends the demo normally."""
    console.say("Serving the local REST API until Ctrl-C; from another shell:")
    for command in api_commands(front, photo, settings):
        console.detail(command)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        console.say("stopping")


def _interrupt_on_sigterm() -> None:
    """``kill PID`` cleans up as Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    _interrupt_on_sigterm()
    sys.exit(main())
