"""The one Lambda-runtime emulation (imgsim_tools.lambda_emulation) that `make invoke`, `imgsim serve`
and the tests share: the context object and handler loading."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import pytest
from imgsim_tools.local import stack as local_stack
from support import LAMBDA_EMULATION_PATH, lambda_context, load_module_from_path

emulation = load_module_from_path("lambda_emulation_under_test", LAMBDA_EMULATION_PATH)
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_context_has_what_the_runtime_passes():
    context = emulation.LambdaContext("imgsim-index", timeout_s=2, memory_mb=1024, region="eu-west-1")
    assert context.invoked_function_arn == "arn:aws:lambda:eu-west-1:123456789012:function:imgsim-index"
    assert context.memory_limit_in_mb == "1024" and context.function_version == "$LATEST"
    assert context.log_group_name == "/aws/lambda/imgsim-index" and "[$LATEST]" in context.log_stream_name
    first = context.get_remaining_time_in_millis()
    time.sleep(0.02)
    assert 0 < context.get_remaining_time_in_millis() < first <= 2000
    assert emulation.LambdaContext("f", request_id="r-1").aws_request_id == "r-1"
    assert emulation.LambdaContext("f").aws_request_id != emulation.LambdaContext("f").aws_request_id


def test_handler_loading_and_its_errors(tmp_path):
    good = tmp_path / "good" / "app.py"
    good.parent.mkdir()
    good.write_text("def handler(event, context):\n    return {'echo': event}\n")
    assert emulation.load_handler(good, "good_app")({"a": 1}, None) == {"echo": {"a": 1}}
    broken = tmp_path / "broken" / "app.py"
    broken.parent.mkdir()
    broken.write_text("import no_such_module_here\n")
    with pytest.raises(emulation.HandlerLoadError, match="ModuleNotFoundError"):
        emulation.load_handler(broken, "broken_app")
    empty = tmp_path / "empty" / "app.py"
    empty.parent.mkdir()
    empty.write_text("x = 1\n")
    with pytest.raises(emulation.HandlerLoadError, match="no callable `handler`"):
        emulation.load_handler(empty, "empty_app")


def test_runner_stack_and_tests_share_it():
    assert Path(inspect.getsourcefile(type(local_stack.lambda_context("IndexFunction", "us-east-1", 60)))) == LAMBDA_EMULATION_PATH
    assert Path(inspect.getsourcefile(type(lambda_context("x")))) == LAMBDA_EMULATION_PATH
    tools = REPO_ROOT / "infra" / "imgsim_tools"
    runner = (tools / "invoke.py").read_text()
    assert "class LambdaContext" not in runner and "lambda_emulation.py" in runner
    defined = [path.relative_to(tools) for path in tools.rglob("*.py") if "class LambdaContext" in path.read_text()]
    assert defined == [Path("lambda_emulation.py")]
