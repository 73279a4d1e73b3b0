"""Helpers shared by tests and benchmarks (not collected by pytest)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def search_app_on_moto(root_dir: Path, name: str, bucket: str, variables: dict[str, str]) -> Iterator[ModuleType]:
    """SearchFunction's handler (module ``name``) on a root of its own over moto's S3 with ``bucket`` created, in a
    process environment of dummy AWS credentials: what a module of API tests runs its requests against."""
    import boto3
    import pytest
    from moto import mock_aws
    from roots import make_root

    with pytest.MonkeyPatch.context() as mp:
        for variable, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x",
                                "AWS_SECRET_ACCESS_KEY": "x", "POWERTOOLS_TRACE_DISABLED": "true",
                                "POWERTOOLS_METRICS_NAMESPACE": "imgsim"}.items():
            mp.setenv(variable, value)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            boto3.client("s3").create_bucket(Bucket=bucket)
            root = make_root(root_dir, {"IMAGES_BUCKET": bucket, **variables})
            try:
                yield handler_on_root(name, SEARCH_APP_PATH, root)
            finally:
                root.close()
