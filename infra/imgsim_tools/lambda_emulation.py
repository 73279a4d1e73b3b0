"""The one emulation of the Lambda Python runtime's own pieces: the context object and handler loading.

Shared by the local invoke runner's child process (``invoke.py``, which runs under
``python -I -S -B`` with only the layer on its path, hence standard library only), by
``imgsim serve`` (``local/stack.py``), and by the tests and benchmarks (through
``tests/support.py``), so every handler in this repository meets the same context.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

ACCOUNT_ID = "123456789012"  # moto's default account, and the one sample ARNs use


class LambdaContext:
    """The attributes and method of the Python runtime's context object (what handlers and powertools read)."""

    def __init__(
        self,
        function_name: str,
        *,
        timeout_s: float = 3.0,
        memory_mb: int = 128,
        region: str = "us-east-1",
        request_id: str | None = None,
        account_id: str = ACCOUNT_ID,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.memory_limit_in_mb = str(memory_mb)  # the runtime passes it as a string
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]", time.gmtime()) + uuid.uuid4().hex
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = time.monotonic() + float(timeout_s)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class HandlerLoadError(Exception):
    """The function's module cannot be imported, or has no callable handler (Lambda's Runtime.ImportModuleError)."""


def load_handler(path: str | os.PathLike[str], module_name: str, handler_name: str = "handler") -> Callable[[dict, Any], Any]:
    """Import ``handler_name`` from a function's module file the way Lambda does: its directory first
    on ``sys.path``, the module registered under ``module_name`` (both functions' files are app.py)."""
    path = os.fspath(path)
    function_dir = os.path.dirname(os.path.abspath(path))
    if function_dir not in sys.path:
        sys.path.insert(0, function_dir)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise HandlerLoadError(f"cannot import {path}: {type(exc).__name__}: {exc}") from exc
    handler = getattr(module, handler_name, None)
    if not callable(handler):
        raise HandlerLoadError(f"{path} has no callable `{handler_name}`")
    return handler
