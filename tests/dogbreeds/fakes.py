"""Test doubles for the CLI: a boto3 session that hands out moto or stubbed clients, deployed stacks, a
loopback HTTP server with Range support."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
from contextlib import contextmanager
from datetime import UTC, datetime

import boto3
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from dogbreeds_stacks.contract import NOT_APPROVED
from dogbreeds_stacks.names import API_PATH, API_STAGE, LAMBDA_ALIAS, Names
from dogbreeds_stacks.settings import Settings

REGION = "eu-west-1"
ACCOUNT = "123456789012"
API_ID = "a1b2c3d4e5"  # the REST API's generated ID
# The deployment the fakes describe: cdk.json's defaults (the endpoint's name is a setting of its own).
NAMES = Settings.load().names
# The endpoint config the endpoint stack last deployed (its output EndpointConfigName), serving version 2.
DEPLOYED_CONFIG = f"{NAMES.endpoint}-config-v2"
DEPLOYED_VERSION = 2


def package_arn(version: int, group: str = NAMES.model_package_group) -> str:
    """A version's ARN, as SageMaker (and moto) answer it; the CLI itself never builds one."""
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{group}/{version}"


def stack_outputs(project: str = NAMES.project, bucket: str = "dogbreeds-artifacts-test") -> dict[str, dict]:
    """What a full deployment's DescribeStacks would answer: stack name -> outputs."""
    names = Names(project=project, endpoint=NAMES.endpoint)
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{names.lambda_function}"
    return {
        names.stack("foundation"): {"ArtifactBucketName": bucket, "KeyArn": "arn:aws:kms:eu-west-1:1:key/k"},
        names.stack("training"): {
            "StateMachineArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{names.state_machine}",
            "ModelPackageGroupName": names.model_package_group,
            "ApprovedPackageParameterName": names.approved_package_parameter,
        },
        names.stack("notebook"): {"NotebookName": names.notebook},
        names.stack("endpoint"): {
            "EndpointName": names.endpoint,
            "EndpointConfigName": DEPLOYED_CONFIG,
            "ModelPackageArn": package_arn(DEPLOYED_VERSION, names.model_package_group),
            "DashboardName": names.dashboard,
        },
        names.stack("invoker"): {
            "FunctionName": names.lambda_function,
            "AliasArn": f"{function_arn}:{LAMBDA_ALIAS}",
            "PredictUrl": f"https://{API_ID}.execute-api.{REGION}.amazonaws.com/{API_STAGE}/{API_PATH}",
            "RestApiId": API_ID,
        },
    }


class Registry:
    """The Model Registry in moto: the group's versions, the approved-package parameter, an endpoint serving one."""

    def __init__(self, names: Names = NAMES) -> None:
        self.names = names
        self.sagemaker = boto3.client("sagemaker", region_name=REGION)
        self.ssm = boto3.client("ssm", region_name=REGION)
        self.sagemaker.create_model_package_group(ModelPackageGroupName=names.model_package_group)

    def register(self, *statuses: str, accuracies: tuple[float, ...] = ()) -> list[str]:
        """One version per status, oldest first, as the pipeline registers them; their ARNs."""
        arns = []
        for status in statuses:
            listed = self.sagemaker.list_model_packages(
                ModelPackageGroupName=self.names.model_package_group, ModelPackageType="Versioned"
            )
            number = len(listed["ModelPackageSummaryList"]) + 1
            accuracy = accuracies[number - 1] if number <= len(accuracies) else 0.8 + number / 100
            job = f"{self.names.job_name_prefix}-train-{number:012d}"
            arns.append(
                self.sagemaker.create_model_package(
                    ModelPackageGroupName=self.names.model_package_group,
                    ModelApprovalStatus=status,
                    InferenceSpecification={
                        "Containers": [
                            {
                                "Image": f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-inference:2.6-gpu",
                                "ModelDataUrl": f"s3://bucket/models/{job}/output/model.tar.gz",
                            }
                        ],
                        "SupportedContentTypes": ["image/jpeg", "image/png"],
                        "SupportedResponseMIMETypes": ["application/json"],
                    },
                    CustomerMetadataProperties={
                        "training_job": job,
                        "tuning_job": "none",
                        "dataset": "s3://bucket/datasets/dogImages/",
                        "code": "s3://bucket/code/abc.tar.gz",
                        "test_accuracy": f"{accuracy:.4f}",
                        "valid_loss": "0.61",
                        "hp.learning_rate": "0.01",
                    },
                )["ModelPackageArn"]
            )
        return arns

    def record(self, arn: str | None) -> None:
        """The approved-package parameter, as the approval recorder writes it."""
        self.ssm.put_parameter(
            Name=self.names.approved_package_parameter, Value=arn or NOT_APPROVED, Type="String", Overwrite=True
        )

    def serve(self, arn: str, config: str = DEPLOYED_CONFIG) -> None:
        """The endpoint on ``config``, whose one variant's model is made from the package ``arn``."""
        model = f"{self.names.project}-model-{arn.rsplit('/', 1)[-1]}"
        self.sagemaker.create_model(
            ModelName=model,
            PrimaryContainer={"ModelPackageName": arn},
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/endpoint",
        )
        self.sagemaker.create_endpoint_config(
            EndpointConfigName=config,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model,
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.g4dn.xlarge",  # moto's list of instance types has no ml.g5
                }
            ],
        )
        self.sagemaker.create_endpoint(EndpointName=self.names.endpoint, EndpointConfigName=config)

    def status(self, version: int) -> tuple[str, str | None]:
        """A version's approval status and ApprovalDescription."""
        d = self.sagemaker.describe_model_package(ModelPackageName=package_arn(version, self.names.model_package_group))
        return d["ModelApprovalStatus"], d.get("ApprovalDescription")


class FakeStacks:
    """CloudFormation's DescribeStacks, answered from a table (moto's CloudFormation needs many extras).

    ``stacks``: name -> outputs, or name -> {"status": ..., "outputs": {...}}.
    """

    def __init__(self, stacks: dict[str, dict]) -> None:
        self.stacks = stacks
        self.asked: list[str] = []

    def install(self, client) -> None:
        pending: list[str] = []

        def capture(params, **_):
            pending.append(params["StackName"])

        def answer(**_):
            name = pending.pop()
            self.asked.append(name)
            if name not in self.stacks:
                error = {"Code": "ValidationError", "Message": f"Stack with id {name} does not exist"}
                return AWSResponse(None, 400, {}, None), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}
            entry = self.stacks[name]
            status = entry.get("status", "CREATE_COMPLETE") if "outputs" in entry else "CREATE_COMPLETE"
            outputs = entry.get("outputs", entry)
            stack = {
                "StackName": name,
                "StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{name}/1",
                "StackStatus": status,
                "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
                "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
            }
            return AWSResponse(None, 200, {}, None), {"Stacks": [stack], "ResponseMetadata": {"HTTPStatusCode": 200}}

        client.meta.events.register("before-parameter-build.cloudformation.DescribeStacks", capture)
        client.meta.events.register("before-call.cloudformation.DescribeStacks", answer)


class FakeSession:
    """Stands in for boto3.Session: stubbed clients where given, else real clients (moto, in the tests)."""

    def __init__(self, stacks: FakeStacks, region: str | None = REGION) -> None:
        self.region_name = region
        self.stacks = stacks
        self.real = boto3.Session(region_name=region or REGION)
        self.stubbers: dict[str, Stubber] = {}
        self.clients: dict[str, object] = {}
        self.created: list[str] = []

    def get_credentials(self):
        return self.real.get_credentials()

    def stub(self, service: str) -> Stubber:
        """A Stubber for ``service``'s client (created once, activated)."""
        if service not in self.stubbers:
            client = self.real.client(service)
            self.clients[service] = client
            self.stubbers[service] = Stubber(client)
            self.stubbers[service].activate()
        return self.stubbers[service]

    def client(self, service: str, config=None):
        self.created.append(service)
        if service not in self.clients:
            client = self.real.client(service, config=config)
            if service == "cloudformation":
                self.stacks.install(client)
            self.clients[service] = client
        return self.clients[service]

    def assert_stubs_used(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


class RangeServer:
    """A loopback HTTP server for one payload, honouring ``Range: bytes=N-`` unless told not to."""

    def __init__(self, payload: bytes, *, honour_range: bool = True, cut_first_response_at: int | None = None):
        self.payload = payload
        self.honour_range = honour_range
        self.cut_first_response_at = cut_first_response_at
        self.requests: list[dict[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if self.path.startswith("/missing"):
                    self.send_error(404)
                    return
                data, start = server.payload, 0
                wanted = self.headers.get("Range")
                if wanted and server.honour_range:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first_response_at is not None and len(server.requests) == 1:
                    self.wfile.write(body[: server.cut_first_response_at])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def serving(payload: bytes, **options):
    with RangeServer(payload, **options) as server:
        yield server


class TrainingLogs:
    """SageMaker's training-job log group in moto: one stream per host of a job, written as the hosts log."""

    GROUP = "/aws/sagemaker/TrainingJobs"

    def __init__(self) -> None:
        self.client = boto3.client("logs", region_name=REGION)
        self.client.create_log_group(logGroupName=self.GROUP)
        # moto, like CloudWatch Logs, refuses events older than 14 days: the offsets count from a minute ago.
        self.base = int(datetime.now(UTC).timestamp() * 1000) - 60_000

    @staticmethod
    def stream_name(job: str, host: str = "algo-1") -> str:
        return f"{job}/{host}-1767225600"

    def write(self, job: str, host: str, *lines: tuple[int, str]) -> str:
        """``(offset in ms, message)`` events into the host's stream (created the first time); its name."""
        stream = self.stream_name(job, host)
        existing = self.client.describe_log_streams(logGroupName=self.GROUP, logStreamNamePrefix=stream)
        if not existing["logStreams"]:
            self.client.create_log_stream(logGroupName=self.GROUP, logStreamName=stream)
        if lines:
            events = [{"timestamp": self.base + offset, "message": text} for offset, text in lines]
            self.client.put_log_events(logGroupName=self.GROUP, logStreamName=stream, logEvents=events)
        return stream


def output_tar_gz(files: dict[str, bytes]) -> bytes:
    """A job's output.tar.gz as SageMaker packs SM_OUTPUT_DATA_DIR: its files at the archive's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
