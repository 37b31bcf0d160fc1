"""The loopback SageMaker runtime (dogbreeds/local/runtime.py) answers as the real service does, through the
real boto3 client (docs/local-mode.md), with a fake model behind it."""

from __future__ import annotations

import json

import boto3
import botocore.loaders
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dogbreeds.local.runtime import (
    ACCOUNT_ID,
    MAX_PAYLOAD_BYTES,
    ModelResponse,
    RuntimeServer,
    ServiceFault,
)
from tests.fake_runtime import CREDENTIALS, ENDPOINT
from tests.lambda_src.servers import JPEG, MODEL, PREDICTIONS, toolkit_error


@pytest.fixture(scope="module")
def service_model() -> dict:
    return botocore.loaders.Loader().load_service_model("sagemaker-runtime", "service-2")


@pytest.fixture(scope="module")
def plain_client(fake_runtime):
    """A plain boto3 client, no retries (so each fault is seen once)."""
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=fake_runtime.url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        **CREDENTIALS,
    )


def invoke(client, name: str = ENDPOINT, body: bytes = JPEG, **kwargs):
    return client.invoke_endpoint(EndpointName=name, Body=body, **kwargs)


def test_success_returns_the_models_body_content_type_and_variant(plain_client, model):
    response = invoke(
        plain_client, ContentType="application/x-image", Accept="application/json", CustomAttributes="top_k=2"
    )
    assert json.loads(response["Body"].read()) == {"predictions": PREDICTIONS, "model": MODEL}
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ResponseMetadata"]["RequestId"]
    (call,) = model.calls
    assert call.endpoint_name == ENDPOINT
    assert call.body == JPEG
    assert (call.content_type, call.accept, call.custom_attributes) == (
        "application/x-image",
        "application/json",
        "top_k=2",
    )


def test_a_missing_header_reaches_the_backend_as_none(plain_client, model):
    invoke(plain_client)
    (call,) = model.calls
    assert call.accept is None
    assert call.custom_attributes is None


@pytest.mark.parametrize(("status", "kind"), [(400, "client"), (413, "client"), (415, "client"), (500, "server")])
def test_model_error_carries_the_original_status_and_whole_body(plain_client, model, service_model, status, kind):
    model.answers = [toolkit_error(status, "the request body is not an image")]
    with pytest.raises(plain_client.exceptions.ModelError) as caught:
        invoke(plain_client)
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["Error"]["Code"] == "ModelError"
    assert response["OriginalStatusCode"] == status
    assert response["OriginalMessage"].startswith("the request body is not an image\nTraceback (most recent")
    assert response["LogStreamArn"] == (
        f"arn:aws:logs:eu-west-1:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/{ENDPOINT}"
    )
    message = response["Error"]["Message"]
    assert message.startswith(f'Received {kind} error ({status}) from primary with message "the request body is')
    assert message.endswith(f"in account {ACCOUNT_ID} for more information.")
    assert "region=eu-west-1" in message  # the region the client signed for
    # Every field botocore read is a member of the service model's ModelError shape.
    members = set(service_model["shapes"]["ModelError"]["members"])
    assert {"Message", "OriginalStatusCode", "OriginalMessage", "LogStreamArn"} <= members
    assert service_model["shapes"]["ModelError"]["error"]["httpStatusCode"] == 424


def test_an_exception_in_the_backend_is_a_model_500_with_a_traceback(plain_client, model):
    model.answers = [RuntimeError("CUDA out of memory")]
    with pytest.raises(plain_client.exceptions.ModelError) as caught:
        invoke(plain_client)
    response = caught.value.response
    assert response["OriginalStatusCode"] == 500
    assert response["OriginalMessage"].splitlines()[0] == "CUDA out of memory"
    assert "Traceback (most recent call last)" in response["OriginalMessage"]
    assert response["Error"]["Message"].startswith("Received server error (500) from primary")


def test_unknown_endpoint_is_the_services_validation_error(plain_client, service_model):
    with pytest.raises(plain_client.exceptions.ValidationError) as caught:
        invoke(plain_client, name="no-such-endpoint")
    error = caught.value.response["Error"]
    assert error == {
        "Code": "ValidationError",
        "Message": f"Endpoint no-such-endpoint of account {ACCOUNT_ID} not found.",
    }
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert service_model["shapes"]["ValidationError"]["error"]["httpStatusCode"] == 400


def test_a_body_over_6_mb_is_refused_before_the_model(plain_client, model):
    with pytest.raises(ClientError) as caught:
        invoke(plain_client, body=b"\xff" * (MAX_PAYLOAD_BYTES + 1))
    assert caught.value.response["Error"] == {"Code": "413", "Message": "HTTP content length exceeded 6291456 bytes."}
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert model.calls == []
    invoke(plain_client, body=b"\xff" * MAX_PAYLOAD_BYTES)  # exactly the limit is accepted
    assert len(model.calls) == 1


@pytest.mark.parametrize(
    ("fault", "shape"),
    [
        (ServiceFault.unavailable(), "ServiceUnavailable"),
        (ServiceFault.model_not_ready(), "ModelNotReadyException"),
        (ServiceFault.internal_failure(), "InternalFailure"),
    ],
)
def test_service_faults_are_the_modelled_error_classes(plain_client, model, service_model, fault, shape):
    model.answers = [fault]
    with pytest.raises(getattr(plain_client.exceptions, shape)) as caught:
        invoke(plain_client)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == fault.status
    assert service_model["shapes"][shape]["error"]["httpStatusCode"] == fault.status
    assert caught.value.response["Error"]["Message"] == fault.message


def test_throttling_is_retried_by_botocore_as_throttling(fake_runtime, model, fast_backoff):
    model.answers = [ServiceFault.throttling()]
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=fake_runtime.url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
        **CREDENTIALS,
    )
    with pytest.raises(ClientError) as caught:
        invoke(client)
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(model.calls) == 3


def test_model_errors_are_not_retried(fake_runtime, model, fast_backoff):
    model.answers = [ModelResponse(500, "text/plain", b"boom")]
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=fake_runtime.url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
        **CREDENTIALS,
    )
    with pytest.raises(client.exceptions.ModelError):
        invoke(client)
    assert len(model.calls) == 1


def test_backends_may_change_while_it_runs(plain_client, backends):
    backends["late"] = lambda invocation: ModelResponse(200, "text/plain", b"late")
    try:
        assert invoke(plain_client, name="late")["Body"].read() == b"late"
    finally:
        del backends["late"]
    with pytest.raises(plain_client.exceptions.ValidationError):
        invoke(plain_client, name="late")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "example.com", "::"])  # noqa: S104 (refused, never bound)
def test_binds_loopback_only(host):
    with pytest.raises(ValueError, match="loopback"):
        RuntimeServer({}, host=host)


def test_start_stop_and_url():
    server = RuntimeServer({})
    assert server.url == ""
    with server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.port > 0
    server.stop()  # stopping twice is harmless
