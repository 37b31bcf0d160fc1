"""``python -m dogbreeds.local.demo`` end to end, at tiny sizes: its output, its failures, its cleanup."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dogbreeds.local import demo, training_job
from dogbreeds_stacks.settings import Settings
from tests.helpers import one
from tests.local.conftest import TINY_DEMO
from tests.local.processes import children_of, port_is_open, processes_mentioning

LOOPBACK_URL = re.compile(r"http://127\.0\.0\.1:(\d+)")


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A stand-in for cdk.out: two templates."""
    folder = tmp_path / "cdk.out"
    folder.mkdir()
    (folder / "dogbreeds-foundation.template.json").write_text(json.dumps({"Resources": {"A": {}, "B": {}}}))
    (folder / "dogbreeds-invoker.template.json").write_text(json.dumps({"Resources": {"C": {}}}))
    (folder / "manifest.json").write_text("{}")
    return folder


def work_folder(output: str) -> Path:
    return Path(re.search(r"^work folder: (\S+)", output, re.M).group(1))


def loopback_ports(output: str) -> set[int]:
    return {int(port) for port in LOOPBACK_URL.findall(output)}


def assert_nothing_left(output: str, children_before: set[int]) -> None:
    work = work_folder(output)
    assert not work.exists()
    assert not processes_mentioning(str(work))
    assert children_of(os.getpid()) <= children_before
    for port in loopback_ports(output):
        assert not port_is_open("127.0.0.1", port), port
    assert "SAGEMAKER_PROGRAM" not in os.environ


def run_client_commands(front, photo, settings, console) -> None:
    """In place of waiting for Ctrl-C (--serve): run the curl and dogbreeds predict commands the demo prints, in a
    shell of their own, while everything still runs; the endpoint, Lambda and API steps' model answers them."""
    commands = demo.api_commands(front, photo, settings)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    environment |= {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"  # dogbreeds
    for command in commands:
        if command.startswith("curl") and shutil.which("curl") is None:
            continue
        result = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, env=environment, timeout=120, check=False
        )
        CLIENT_RESULTS.append((command, result.returncode, result.stdout + result.stderr))
    console.say(f"ran {len(CLIENT_RESULTS)} client commands")


CLIENT_RESULTS: list[tuple[str, int, str]] = []


def test_the_demo_runs_every_step_and_leaves_nothing_behind(
    templates: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    children_before = children_of(os.getpid())
    modules_before = {name: sys.modules.get(name) for name in ("inference", "model", "images", "handler", "fetch")}
    monkeypatch.setattr(demo, "serve_until_interrupted", run_client_commands)

    status = demo.main([*TINY_DEMO, "--templates", str(templates), "-c", "endpoint_name=local-demo", "--serve"])

    output, errors = capsys.readouterr()
    assert status == 0, output + errors
    assert errors == ""
    steps = re.findall(r"^\[(\d)/7\] ", output, re.M)
    assert steps == ["1", "2", "3", "4", "5", "6", "7"]
    assert re.search(r"^ +dogbreeds-foundation\.template\.json +2 resources$", output, re.M)
    assert re.search(r"^ +dogbreeds-invoker\.template\.json +1 resources$", output, re.M)
    assert "3 classes (001.Affenpinscher, 042.Carolina_dog, 103.Mastiff)" in output
    assert "train 48, valid 12, test 12 images" in output
    assert "$ torchrun --nnodes 1 --nproc_per_node 2 train.py --backbone resnet18 " in output
    assert re.search(r"^ +epoch 1/1: train loss \d", output, re.M)
    assert re.search(r"^ +epoch +train loss +train acc +valid loss +valid acc +seconds$", output, re.M)
    assert re.search(r"^ +curves: \S+/opt-ml/output/data/curves\.png$", output, re.M)
    assert re.search(r"model\.tar\.gz \([\d.]+ MB\)", output)
    assert "a body that is no image: ModelError, OriginalStatusCode 400" in output
    # The endpoint's name is the setting's (-c here), in the runtime and in the Lambda's environment.
    assert re.search(r"^ +SageMaker runtime: http://127\.0\.0\.1:\d+, endpoint local-demo$", output, re.M)
    assert re.search(r"^ +environment: ENDPOINT_NAME=local-demo, ", output, re.M)
    assert re.search(
        r'^ +event \{"url": "http://127\.0\.0\.1:\d+/Carolina-Dog-standing-outdoors\.jpg"\}$', output, re.M
    )
    assert re.search(
        r'^ +event \{"image_base64": "<\d+ bytes of Carolina-Dog-standing-outdoors\.jpg, base64>"\}', output, re.M
    )
    assert output.count("  -> 200 in ") == 2
    # Step 7: the local REST API, called with predict's own signing; unsigned and wrongly signed calls refused.
    assert re.search(r"^ +POST http://127\.0\.0\.1:\d+/v1/predict \(the invoker stack's PredictUrl", output, re.M)
    assert re.search(r"^ +signed, the photo's raw bytes \(\d+ bytes, image/jpeg\) -> 200 in \d+ ms$", output, re.M)
    assert re.search(r"^ +signed, http://127\.0\.0\.1:\d+/Carolina-Dog-standing-outdoors\.jpg -> 200 in ", output, re.M)
    assert re.search(r"^ +unsigned -> 403 Missing Authentication Token$", output, re.M)
    assert re.search(r"^ +signed with a wrong secret -> 403 The request signature we calculated does not", output, re.M)
    assert re.search(r'^ +access log: 4 entries with the stage\'s fields, the last: \{"requestId": ', output, re.M)
    # Four top-k tables (boto3, the two Lambda events, the API), each with the three trained breeds.
    assert output.count("rank  breed") == 4
    for label in ("Affenpinscher", "Carolina dog", "Mastiff"):
        assert len(re.findall(rf"^ +\d  {label} +\d +[01]\.\d{{4}}$", output, re.M)) == 4, label
    # --serve: curl --aws-sigv4 and dogbreeds predict, as printed, reach the model through the local API.
    assert CLIENT_RESULTS, "no client command ran"
    for command, code, printed in CLIENT_RESULTS:
        assert code == 0, f"{command}\n{printed}"
        assert "Carolina dog" in printed, f"{command}\n{printed}"
    assert any(command.split()[2:4] == ["dogbreeds", "--region"] for command, _, _ in CLIENT_RESULTS)
    assert re.search(
        r"^cleaned up: stopped the local REST API; stopped the Lambda function's process; stopped the image web "
        r"server; stopped the SageMaker runtime server; stopped the training job's processes; removed \S+$",
        output,
        re.M,
    )
    assert re.search(r"^Done in [\d.]+ s\.$", output, re.M)
    assert_nothing_left(output, children_before)
    assert {name: sys.modules.get(name) for name in modules_before} == modules_before
    # The archive holds the artifact train.py writes and the serving code beside it (training/model.py names both;
    # imported only now, as the demo must leave no `model` module behind).
    from model import ARTIFACT_FILES, SERVING_CODE_DIR, SERVING_FILES

    members = sorted([*ARTIFACT_FILES, *(f"{SERVING_CODE_DIR}/{name}" for name in SERVING_FILES)])
    assert re.search(rf"^ +{re.escape(', '.join(members))}$", output, re.M)


def test_a_failed_training_job_stops_the_demo_with_the_job_s_failure_reason(
    image_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = Path(shutil.copytree(image_set, tmp_path / "dogImages"))
    for split in ("train", "valid", "test"):
        (broken / split / "200.Empty_breed").mkdir()
    kept = tmp_path / "kept"

    status = demo.main(["--data-dir", str(broken), "--processes", "1", "--keep", str(kept)])

    output, errors = capsys.readouterr()
    assert status == 1
    reason = "the train split has class folders with no image file: 200.Empty_breed"
    assert errors.startswith("error: step 3 failed: the training job failed (toolkit exit status 1).\n")
    assert f"FailureReason ({kept / 'opt-ml' / 'output' / 'failure'}):\n  {reason}\n" in errors
    assert (kept / "opt-ml" / "output" / "failure").read_text() == reason
    assert (kept / "training-job.log").is_file()
    assert "cleaned up: stopped the training job's processes\n" in output
    assert output.endswith(f"kept: {kept}\n")
    assert not processes_mentioning(str(kept))


def test_keep_refuses_a_folder_with_content(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "something").write_text("")
    assert demo.main(["--keep", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: --keep {tmp_path}: the folder must be new or empty\n"


def test_ctrl_c_during_training_ends_the_job_s_processes_and_removes_the_work_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs: list[training_job.TrainingJob] = []
    running: list[int] = []
    start_job, show = training_job.start_job, demo.TrainingProgress.show

    def recorded(job: training_job.TrainingJob) -> subprocess.Popen[str]:
        jobs.append(job)
        return start_job(job)

    def interrupted_after_the_first_epoch(self: demo.TrainingProgress, line: str) -> None:
        show(self, line)
        if re.search(r"\bepoch=1;", line):
            running.extend(processes_mentioning(str(jobs[0].base)))
            raise KeyboardInterrupt

    monkeypatch.setattr(training_job, "start_job", recorded)
    monkeypatch.setattr(demo.TrainingProgress, "show", interrupted_after_the_first_epoch)
    children_before = children_of(os.getpid())

    status = demo.main([*TINY_DEMO, "--epochs", "5"])

    output, errors = capsys.readouterr()
    assert status == 130
    assert errors == "interrupted during step 3; cleaning up\n"
    assert len(running) >= 3  # the toolkit, torchrun and its two training processes were running
    assert re.search(r"^cleaned up: stopped the training job's processes; removed \S+$", output, re.M)
    assert_nothing_left(output, children_before)


def test_ctrl_c_while_the_servers_run_stops_them_all(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "show_lambda_response", interrupted)
    children_before = children_of(os.getpid())

    # One training process: what is interrupted here are the servers, not the (two-process) training job.
    status = demo.main([*TINY_DEMO, "--processes", "1"])

    output, errors = capsys.readouterr()
    assert status == 130
    assert errors == "interrupted during step 6; cleaning up\n"
    assert len(loopback_ports(output)) == 2  # the SageMaker runtime and the image web server
    assert (
        "stopped the Lambda function's process; stopped the image web server; stopped the SageMaker runtime" in output
    )
    assert_nothing_left(output, children_before)


def test_the_options_become_the_job_s_hyperparameters() -> None:
    parse = demo.get_args_parser().parse_args
    assert demo.hyperparameters(parse([])) == {
        "backbone": "resnet18",
        "pretrained": "none",
        "epochs": 6,
        "image_size": 32,
        "batch_size": 8,
        "learning_rate": 0.01,
        "workers": 0,
        "sagemaker_torch_distributed_enabled": True,
        "sagemaker_mpi_num_of_processes_per_host": 2,
    }
    one_process = demo.hyperparameters(parse(["--processes", "1", "--pretrained", "/weights/resnet18.pth"]))
    assert "sagemaker_torch_distributed_enabled" not in one_process
    assert one_process["pretrained"] == "auto"  # train.py then takes the 'pretrained' channel


def test_a_number_below_one_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        demo.main(["--processes", "0"])
    assert exited.value.code == 2
    assert "argument --processes: expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def test_the_lambda_runs_with_the_environment_the_invoker_stack_sets(assembly) -> None:
    """The synthesized invoker's variables, with local mode's changes on top: only those, and only these."""
    settings = assembly.settings
    _, function = one(
        assembly.template("invoker"), "AWS::Lambda::Function", {"FunctionName": settings.names.lambda_function}
    )
    deployed = function["Properties"]["Environment"]["Variables"]
    url = "http://127.0.0.1:9"

    local = demo.function_variables(Settings.load(), url)

    assert local == {**deployed, **demo.LOCAL_MODE_ENVIRONMENT, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url}
    assert set(demo.LOCAL_MODE_ENVIRONMENT) & set(deployed) == {"ALLOW_HTTP_URLS"}  # the loopback image server
    assert deployed["ALLOW_HTTP_URLS"] == "false"


def test_the_lambda_s_environment_follows_the_settings() -> None:
    local = demo.function_variables(Settings.load(["lambda_max_image_mb=2", "endpoint_name=other"]), "http://x")
    assert (local["MAX_IMAGE_BYTES"], local["ENDPOINT_NAME"]) == (str(2 * 1024 * 1024), "other")


def test_a_wrong_setting_stops_the_demo_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["-c", "lambda_max_image_mb=9", "-c", "endpoint_nam=x"]) == 2
    output, errors = capsys.readouterr()
    assert output == ""  # no work folder, no step
    assert sorted(errors.splitlines()) == [
        "error: endpoint_nam is not a setting. Did you mean endpoint_name? The settings are listed in the README and "
        "in cdk.json.",
        "error: lambda_max_image_mb=9: accepted is a whole number from 1 to 4.",
    ]


# --- --precision ---------------------------------------------------------------------------------------------------


def test_int8_has_the_job_quantize_and_the_other_precisions_do_not() -> None:
    parse = demo.get_args_parser().parse_args
    assert demo.hyperparameters(parse(["--precision", "int8"]))["quantize"] == "int8"
    for precision in ("auto", "fp32", "bf16", "fp16"):
        assert "quantize" not in demo.hyperparameters(parse(["--precision", precision]))


def test_an_unknown_precision_is_refused_with_the_accepted_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        demo.main(["--precision", "fp8"])
    assert exited.value.code == 2
    assert "argument --precision: invalid choice: 'fp8' (choose from auto, fp32, bf16, fp16, int8)" in (
        capsys.readouterr().err.replace("'auto', 'fp32', 'bf16', 'fp16', 'int8'", "auto, fp32, bf16, fp16, int8")
    )


@pytest.mark.parametrize(
    ("gpu", "precision", "message"),
    [
        (
            False,
            "fp16",
            "error: --precision fp16 needs a GPU, and this machine, which serves the local endpoint, has no GPU: "
            "accepted here are auto, fp32, bf16 and int8",
        ),
        (
            True,
            "int8",
            "error: --precision int8 needs a CPU, and this machine, which serves the local endpoint, has a GPU: "
            "accepted here are auto, fp32, bf16 and fp16",
        ),
    ],
)
def test_a_precision_this_machine_cannot_serve_stops_the_demo_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], gpu: bool, precision: str, message: str
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert demo.main(["--precision", precision]) == 2
    output, errors = capsys.readouterr()
    assert errors.strip() == message
    assert "work folder" not in output


def test_the_precision_defaults_to_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(demo, "local_precision_problem", lambda precision: seen.append(precision) or "stop here")
    demo.main([])
    demo.main(["-c", "inference_precision=fp32"])
    demo.main(["-c", "inference_precision=fp32", "--precision", "bf16"])
    assert seen == ["auto", "fp32", "bf16"]


def test_the_demo_trains_quantizes_and_serves_int8(capsys: pytest.CaptureFixture[str]) -> None:
    status = demo.main([*TINY_DEMO, "--precision", "int8"])
    output, errors = capsys.readouterr()
    assert status == 0, output + errors
    reports = re.findall(
        r"^ +int8 model: test accuracy [\d.]+ against fp32 [\d.]+ on 12 images: -?[\d.]+ points lost, (within|more "
        r"than) the 1 allowed; torchscript(?:_frozen)?, calibrated on 12 valid images$",
        output,
        re.M,
    )
    assert len(reports) == 2, output  # in the metrics, and where the endpoint starts
    served = "int8" if reports[0] == "within" else "fp32"
    assert re.search(rf"^ +precision: served in {served} \(INFERENCE_PRECISION=int8\)$", output, re.M), output
    assert ("not int8: the worker fell back to fp32 and logged why" in output) is (served == "fp32")
    assert re.search(r"^ +\$ torchrun .* train\.py .*--quantize int8", output, re.M), output
    assert re.search(r"^ +\[rank 0\] int8: test top-1 ", output, re.M), output
