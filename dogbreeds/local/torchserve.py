"""The parts of TorchServe (the Java model server in the SageMaker PyTorch inference container) that its toolkit uses.

The toolkit's ``HandlerService`` talks to TorchServe through a context object: ``system_properties``
(the model folder), ``request_processor[0].get_request_properties()`` (the request's headers), and
``set_response_status`` / ``set_response_content_type``. ``ServerContext`` and ``RequestProcessor`` are
those parts. ``fresh_worker_imports`` gives an in-process worker what a fresh TorchServe worker process has:
the serving code first on the path, the model's environment, and none of that code imported yet.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path


class RequestProcessor:
    """TorchServe's per-request header holder, as the toolkit reads it."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def get_request_properties(self) -> dict[str, str]:
        return self._headers


class ServerContext:
    """Stand-in for TorchServe's ``ts.context.Context``: the parts the SageMaker toolkit uses."""

    def __init__(self, model_dir: Path) -> None:
        # TorchServe gives gpu_id None on a machine without GPUs, and batch_size 1 unless configured.
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 1}
        self.request_processor: list[RequestProcessor] = []
        self.status: tuple[int, str] | None = None
        self.content_type: str | None = None

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type = value


@contextlib.contextmanager
def fresh_worker_imports(code_dir: Path, environment: Mapping[str, str]) -> Iterator[None]:
    """Import from ``code_dir`` as a fresh worker process does, then put this process back as it was.

    Inside: ``code_dir`` first on ``sys.path`` and in ``PYTHONPATH``, ``environment`` set, and none of the
    modules ``code_dir`` holds imported yet (this process may have its own ``model`` or ``inference``).
    After: ``sys.path``, the environment and ``sys.modules`` as before. The worker keeps what it imported
    through the functions it holds; nothing of it stays importable by name.
    """
    local_names = {path.stem for path in code_dir.glob("*.py")} | {
        path.parent.name for path in code_dir.glob("*/__init__.py")
    }

    def is_local(name: str) -> bool:
        return name.split(".", 1)[0] in local_names

    saved_modules = {name: module for name, module in sys.modules.items() if is_local(name)}
    saved_path = list(sys.path)
    changed = {*environment, "PYTHONPATH"}
    saved_environment = {name: os.environ.get(name) for name in changed}
    for name in saved_modules:
        del sys.modules[name]
    sys.path.insert(0, str(code_dir))
    os.environ.update(environment)
    os.environ["PYTHONPATH"] = str(code_dir)  # as the toolkit sets it before starting TorchServe
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in [name for name in sys.modules if is_local(name)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
