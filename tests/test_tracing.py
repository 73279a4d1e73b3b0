"""imgsim.tracing: powertools' Tracer (and with it the X-Ray SDK) is loaded only when tracing is on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from imgsim.tracing import NoTracer, tracing_enabled

IN_LAMBDA = {"LAMBDA_TASK_ROOT": "/var/task"}


@pytest.mark.parametrize(("env", "enabled"), [
    (IN_LAMBDA, True),
    ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "true"}, False),
    ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "1"}, False),
    ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "false"}, True),
    ({**IN_LAMBDA, "AWS_SAM_LOCAL": "true"}, False),
    ({}, False),  # outside Lambda, as powertools decides
])
def test_tracing_follows_powertools_rules(env, enabled):
    assert tracing_enabled(env) is enabled


def test_pass_through_tracer_returns_the_handler_itself():
    def handler(event, context):
        return event

    tracer = NoTracer()
    assert tracer.capture_lambda_handler(handler) is handler
    assert tracer.put_annotation("k", 1) is None


def loaded_after_make_tracer(env: dict[str, str]) -> dict:
    code = ("import sys, json; from imgsim.tracing import make_tracer; t = make_tracer(); "
            "print(json.dumps({'type': type(t).__name__, 'xray': 'aws_xray_sdk' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_tracing_off_never_imports_the_xray_sdk():
    assert loaded_after_make_tracer({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "true"}) == {
        "type": "NoTracer", "xray": False}


def test_tracing_on_is_powertools_tracer():
    assert loaded_after_make_tracer({**IN_LAMBDA, "AWS_REGION": "us-east-1"}) == {"type": "Tracer", "xray": True}
