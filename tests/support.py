"""Helpers shared by tests and benchmarks (not collected by pytest)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
INDEX_APP_PATH = REPO_ROOT / "functions" / "index" / "app.py"
SEARCH_APP_PATH = REPO_ROOT / "functions" / "search" / "app.py"


LAMBDA_EMULATION_PATH = REPO_ROOT / "infra" / "imgsim_tools" / "lambda_emulation.py"


def lambda_context(function_name: str, *, timeout_s: float = 60.0, memory_mb: int = 1024, request_id: str | None = None):
    """The Lambda context object every test and benchmark hands a handler: imgsim_tools.lambda_emulation's,
    the one `make invoke` and `imgsim serve` use too."""
    from imgsim_tools import lambda_emulation

    return lambda_emulation.LambdaContext(function_name, timeout_s=timeout_s, memory_mb=memory_mb, request_id=request_id)


def load_module_from_path(name: str, path: Path, *, register: bool = False) -> ModuleType:
    """Execute a file as module ``name``.

    The two Lambda handlers are both ``app.py``, so tests load them by path under
    distinct names, as Lambda loads each from its own /var/task. ``register``
    puts the module in ``sys.modules`` (needed when something resolves the
    module by name, e.g. pydantic models in powertools' validation).
    """
    folder = str(Path(path).resolve().parent)
    if folder not in sys.path:  # as Lambda puts /var/task first: a handler's sibling modules import
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def handler_on_root(name: str, path: Path, root) -> ModuleType:
    """A function's module loaded as ``name`` (registered) and running on ``root`` (``use_root``): what the local
    stack does for each execution environment, and what a test does instead of editing the environment."""
    module = load_module_from_path(name, path, register=True)
    module.use_root(root)
    return module


def notifying_bucket(s3, sqs, bucket: str, queue: str) -> tuple[str, str]:
    """A bucket whose object events go to a queue, as template.yaml wires them (moto): (queue URL, queue ARN)."""
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})
    return queue_url, queue_arn
