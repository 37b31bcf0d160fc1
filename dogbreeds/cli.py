"""The operator CLI: ``dogbreeds <command>`` runs the deployed system from a laptop.

Every command finds what it needs from the deployed stacks' outputs (CloudFormation), with stack
names from the settings (cdk.json, with ``-c key=value`` as for ``cdk synth``); expected failures end
with one ``error:`` line and a documented exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from types import ModuleType

from boto3.exceptions import S3UploadFailedError

from dogbreeds import cost
from dogbreeds.ops import (
    approve,
    dataset,
    logs,
    models,
    predict,
    preflight,
    reject,
    resize,
    status,
    training,
    weights,
)
from dogbreeds.ops import aws as aws_module
from dogbreeds.ops.aws import Aws
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_USAGE, OpsError, from_botocore
from dogbreeds_stacks.settings import SettingsError

# The distribution the CLI is installed from (pyproject.toml's project name).
DISTRIBUTION = "dog-breed-classifier"

COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "preflight": (preflight, "before the first deploy: the service quotas these settings need, and what is short"),
    "upload-data": (dataset, "download dogImages, check it, and sync train/valid/test to the artifact bucket"),
    "upload-weights": (weights, "put torchvision's pretrained weights for a backbone into the bucket"),
    "train": (training, "start the training pipeline and follow it: states, jobs, their logs, trials, the model"),
    "logs": (logs, "a training job's logs, every host's stream, each line after its host (--follow while it runs)"),
    "models": (models, "the model package versions, newest first: approval, test accuracy, live, latest approved"),
    "approve": (approve, "approve a model package version, so that the next endpoint deploy serves it"),
    "reject": (reject, "reject a model package version (with the reason)"),
    "predict": (predict, "classify one image (a file or a URL) through the REST API (or --lambda, --endpoint)"),
    "status": (status, "the stacks, the last training run, the endpoint and the Lambda at a glance"),
    "resize-endpoint": (resize, "change the endpoint's instance type: autoscaling off, deploy, autoscaling on"),
    "cost": (cost, "the monthly cost of these settings and the cost per million predictions (no AWS call)"),
}

EXAMPLES = """examples:
  dogbreeds preflight                         # before the first deploy: quotas vs settings, increase requests
  dogbreeds upload-data                       # download (resumable), check, upload, verify
  dogbreeds upload-weights --backbone resnet50
  dogbreeds train --no-tune --epochs 5 -H learning_rate=0.01 -H batch_size=64
  dogbreeds train --attach run-1              # follow a run already started, to its trials and files
  dogbreeds logs JOB --follow                 # a training job's log lines, every host's (train names the jobs)
  dogbreeds status --json                     # --json on every command that prints data, for scripts
  dogbreeds models                            # versions, approval status, test accuracy; live, latest approved
  dogbreeds approve 4 --note "0.87 on the test set, checked the confusions"
  dogbreeds reject 3 --reason "misclassifies puppies"
  dogbreeds predict https://example.com/dog.jpg --top-k 3
  dogbreeds --region eu-west-1 -c project_name=demo status
  dogbreeds resize-endpoint --instance-type ml.g5.xlarge   # deregister autoscaling, deploy, register again
  dogbreeds cost --lambda-ms 200"""


def _global_options(parser: argparse.ArgumentParser, *, late: bool) -> None:
    """--profile, --region and -c; accepted before the command and (late) after it."""
    default = {"default": argparse.SUPPRESS} if late else {}
    parser.add_argument("--profile", help="AWS profile (default: AWS_PROFILE, else the default chain)", **default)
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, else the profile's region)", **default)
    parser.add_argument(
        "-c",
        "--context",
        action="append",
        dest="late_context" if late else "context",
        metavar="KEY=VALUE",
        help="override a setting, as with cdk synth -c (repeatable); the stack names follow project_name",
        **({"default": argparse.SUPPRESS} if late else {"default": []}),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dogbreeds",
        description="Operate the deployed dog-breed classifier (the names come from the stacks' outputs).",
        epilog=f"{EXAMPLES}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, late=False)
    parser.add_argument(
        "--version",
        action="store_true",
        dest="show_version",  # approve's and reject's VERSION is args.version
        help="print the version, and the project and region a command would use (no AWS call), then exit",
    )
    late = argparse.ArgumentParser(add_help=False)
    _global_options(late, late=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        sub = commands.add_parser(
            name,
            parents=[late],
            help=summary,
            description=(module.__doc__ or summary).replace("``", "").strip(),
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.show_version:
        for line in version_lines(args):
            print(line)
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    module, _ = COMMANDS[args.command]
    try:
        config = Config.load([*args.context, *getattr(args, "late_context", [])])
        aws = Aws(getattr(args, "profile", None), getattr(args, "region", None))
        return module.run(args, config, aws)
    except SettingsError as err:  # each wrong setting on its own line
        return _fail("\nerror: ".join(err.problems), EXIT_USAGE)
    except OpsError as err:
        return _fail(str(err), err.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted; running the command again picks up where it stopped.", EXIT_INTERRUPTED)
    except S3UploadFailedError as err:
        return _fail(str(err), OpsError.exit_code)
    except Exception as err:
        mapped = from_botocore(err)
        if mapped is None:
            raise
        return _fail(str(mapped), mapped.exit_code)


def version_lines(args: argparse.Namespace) -> list[str]:
    """The package's version; the project name (cdk.json, -c) and region the commands would use, both read
    without an AWS call (a wrong setting or profile is said, not raised)."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "unknown (not installed: pip install -e .)"
    try:
        project = Config.load([*args.context, *getattr(args, "late_context", [])]).settings.project_name
    except (SettingsError, OpsError) as err:
        project = f"not known ({err.problems[0] if isinstance(err, SettingsError) else err})"
    requested = Aws(getattr(args, "profile", None), getattr(args, "region", None))
    try:
        region = aws_module.new_session(requested.profile, requested.requested_region).region_name or "none configured"
    except Exception as err:
        mapped = from_botocore(err)
        if mapped is None:
            raise
        region = f"not known ({mapped})"
    return [f"dogbreeds {version} ({DISTRIBUTION})", f"project: {project}; region: {region}"]


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
