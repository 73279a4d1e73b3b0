"""Responses: JSON bodies, errors in the envelope, and the per-phase timing of a request (``Server-Timing``)."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from .errors import Problem


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


def error_response(problem: Problem) -> Response[Any]:
    return json_response(problem.status, problem.body(), problem.headers)


class Timer:
    """Milliseconds spent per phase of one request (for took_ms, Server-Timing and metrics); the services' PhaseTimer."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}

    def add(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + (now - since) * 1000.0
        return now

    def total_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0

    def server_timing(self) -> str:
        parts = [f"{name};dur={ms:.1f}" for name, ms in self.phases.items()]
        parts.append(f"total;dur={self.total_ms():.1f}")
        return ", ".join(parts)
