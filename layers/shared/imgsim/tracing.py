"""The functions' tracer: powertools' ``Tracer`` when X-Ray tracing is on, a pass-through when it is off.

Why not always ``Tracer()``: powertools imports the X-Ray SDK even for a disabled tracer (it
switches the SDK off through its global config), and that import was 137 ms of SearchFunction's
140 ms-floor cold start (``make bench`` → ``bench_cold_start.py``). With the template's default
``Tracing=PassThrough`` the functions set ``POWERTOOLS_TRACE_DISABLED=true`` and never load it.
The pass-through covers exactly the part of powertools' Tracer API the handlers use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

TRUTHY = {"1", "true", "yes", "on", "y", "t"}


class HandlerTracer(Protocol):
    def capture_lambda_handler(self, lambda_handler: Callable[..., Any]) -> Callable[..., Any]: ...

    def put_annotation(self, key: str, value: Any) -> None: ...


class NoTracer:
    """Tracing off: decorators return the function unchanged, annotations go nowhere."""

    def capture_lambda_handler(self, lambda_handler: Callable[..., Any]) -> Callable[..., Any]:
        return lambda_handler

    def put_annotation(self, key: str, value: Any) -> None:
        return None


def tracing_enabled(environ: dict[str, str] | None = None) -> bool:
    """powertools' own rule: on inside Lambda unless POWERTOOLS_TRACE_DISABLED; off under SAM local."""
    env = os.environ if environ is None else environ
    if env.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in TRUTHY:
        return False
    return bool(env.get("LAMBDA_TASK_ROOT")) and not env.get("AWS_SAM_LOCAL") and not env.get("AWS_CHALICE_CLI_MODE")


def make_tracer() -> HandlerTracer:
    if not tracing_enabled():
        return NoTracer()
    from aws_lambda_powertools import Tracer

    tracer: HandlerTracer = Tracer()
    return tracer
