"""A model.tar.gz served as the SageMaker PyTorch inference container serves it, with no Docker and no Java.

On an endpoint, SageMaker extracts ``model.tar.gz`` into ``/opt/ml/model``; the container's toolkit
(sagemaker-pytorch-inference) starts TorchServe with ``PYTHONPATH=/opt/ml/model/code`` and its
``HandlerService`` as the handler. A fresh TorchServe worker calls ``HandlerService.initialize(context)``,
which imports ``$SAGEMAKER_PROGRAM`` from ``code/`` and calls ``model_fn``; then every request is
``handle([{"body": bytearray}], context)``, the context carrying the request's headers and taking the
response's status and content type.

``ModelWorker`` does exactly that with the real toolkit, in this process: only TorchServe itself (the
Java model server) is replaced, by ``ServerContext`` and ``RequestProcessor``, the parts of TorchServe's
context that the toolkit uses. A ``ModelWorker`` is a ``RuntimeServer`` backend (``invoke``); ``answer``
keeps all that TorchServe would send back (the reason phrase too), and the tests of inference.py use it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from sagemaker_pytorch_serving_container.handler_service import HandlerService

from dogbreeds.local.runtime import Invocation, ModelResponse
from dogbreeds.local.torchserve import RequestProcessor, ServerContext, fresh_worker_imports

SERVING_CODE_DIR = "code"  # where the toolkit looks for SAGEMAKER_PROGRAM inside the model folder
INFERENCE_PROGRAM = "inference.py"
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"


class Answer(NamedTuple):
    """What the container answers to one request, as TorchServe hands it back."""

    status: int
    phrase: str  # the HTTP reason phrase: the toolkit sets it to an error's message
    content_type: str | None  # None where the handler set none (the toolkit's error answers)
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def message(self) -> str:
        """The first line of the body: an error's message, without the traceback the toolkit appends."""
        return self.text.split("\n", 1)[0]

    def json(self) -> Any:
        return json.loads(self.body)


class ModelWorker:
    """One TorchServe worker running the real ``HandlerService`` on a deployed model folder.

    ``environment`` is the model's environment (the endpoint stack's ``TOP_K`` and the like); it and
    ``SAGEMAKER_PROGRAM`` are set while the worker starts, which is when the toolkit and the serving
    code read them. Requests are handled one at a time, as a TorchServe worker handles them.
    """

    def __init__(self, model_dir: Path, environment: Mapping[str, str] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.context = ServerContext(self.model_dir)
        self.service = HandlerService()
        self._lock = threading.Lock()
        code_dir = self.model_dir / SERVING_CODE_DIR
        if not (code_dir / INFERENCE_PROGRAM).is_file():
            raise FileNotFoundError(f"{code_dir / INFERENCE_PROGRAM} does not exist: the model has no serving code")
        # The endpoint's environment, with its /opt/ml/model/code standing here for the model folder's code/.
        variables = {
            "SAGEMAKER_PROGRAM": INFERENCE_PROGRAM,
            **(environment or {}),
            "SAGEMAKER_SUBMIT_DIRECTORY": str(code_dir),
        }
        with fresh_worker_imports(code_dir, variables):
            self.service.initialize(self.context)

    @property
    def model(self) -> Any:
        """What the serving code's ``model_fn`` returned; the toolkit passes it to every request."""
        return self.service._service._model

    @property
    def program(self) -> Path:
        """The file of the serving code the worker imported: ``code/inference.py`` of the model folder."""
        return Path(self.service._service._model_fn.__globals__["__file__"])

    def answer(
        self, body: bytes, content_type: str | None, *, accept: str | None = None, custom_attributes: str | None = None
    ) -> Answer:
        """What the container answers to ``POST /invocations`` with these headers."""
        headers = {"Content-Type": content_type, "Accept": accept, CUSTOM_ATTRIBUTES_HEADER: custom_attributes}
        with self._lock:
            self.context.request_processor = [RequestProcessor({k: v for k, v in headers.items() if v is not None})]
            self.context.status, self.context.content_type = None, None
            [answer] = self.service.handle([{"body": bytearray(body)}], self.context)
            status, phrase = self.context.status or (200, "")
            response_type = self.context.content_type
        data = answer.encode("utf-8") if isinstance(answer, str) else bytes(answer)
        return Answer(status, phrase, response_type, data)

    def invoke(
        self, body: bytes, content_type: str | None, *, accept: str | None = None, custom_attributes: str | None = None
    ) -> ModelResponse:
        """``answer`` as the runtime server passes it on (text/plain where the container set no content type)."""
        answer = self.answer(body, content_type, accept=accept, custom_attributes=custom_attributes)
        return ModelResponse(answer.status, answer.content_type or "text/plain; charset=utf-8", answer.body)

    def __call__(self, invocation: Invocation) -> ModelResponse:
        return self.invoke(
            invocation.body,
            invocation.content_type,
            accept=invocation.accept,
            custom_attributes=invocation.custom_attributes,
        )
