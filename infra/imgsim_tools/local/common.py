"""What `imgsim serve` emulates, read from the project's template, and the errors every part of the stack shares."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..project import ProjectNotFound, handler_file, project_root, template_path

try:
    REPO_ROOT = project_root()
except ProjectNotFound as exc:  # imported only to run the stack: the command reports it in one line
    raise ImportError(str(exc)) from exc
INDEX_HANDLER = handler_file("index", REPO_ROOT)
SEARCH_HANDLER = handler_file("search", REPO_ROOT)

BUCKET = "imgsim-images"
QUEUE = "imgsim-index-queue"
DLQ = "imgsim-index-dlq"
ACCOUNT_ID = "123456789012"  # moto's default account
# The built template when `make build` ran (what Lambda runs), else the source one.
TEMPLATE = template_path(REPO_ROOT)


@dataclass(frozen=True)
class TemplateSettings:
    """What the stack emulates, read from template.yaml rather than copied (a change there shows here)."""

    index_timeout_s: int
    search_timeout_s: int
    index_batch_size: int
    visibility_timeout_s: int
    max_receive_count: int
    queue_retention_s: int
    dlq_retention_s: int

    @classmethod
    def read(cls, path: Path = TEMPLATE) -> TemplateSettings:
        import yaml

        class TemplateLoader(yaml.SafeLoader):
            """CloudFormation's short intrinsics (!Ref, !Sub, ...) read as None: only literal values are used."""

        TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=TemplateLoader)
        resources = doc["Resources"]
        defaults = (doc.get("Globals") or {}).get("Function") or {}

        def function(name: str, key: str) -> Any:
            return resources[name]["Properties"].get(key, defaults.get(key))

        sqs_events = [e["Properties"] for e in (function("IndexFunction", "Events") or {}).values() if e.get("Type") == "SQS"]
        queue = resources["IndexQueue"]["Properties"]
        return cls(
            index_timeout_s=int(function("IndexFunction", "Timeout")),
            search_timeout_s=int(function("SearchFunction", "Timeout")),
            index_batch_size=int(sqs_events[0].get("BatchSize", 10)),
            visibility_timeout_s=int(queue["VisibilityTimeout"]),
            max_receive_count=int(queue["RedrivePolicy"]["maxReceiveCount"]),
            queue_retention_s=int(queue["MessageRetentionPeriod"]),
            dlq_retention_s=int(resources["IndexDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"]),
        )


SETTINGS = TemplateSettings.read()
INDEX_TIMEOUT_S = SETTINGS.index_timeout_s
SEARCH_TIMEOUT_S = SETTINGS.search_timeout_s
INDEX_BATCH_SIZE = SETTINGS.index_batch_size
# Lambda rejects invocation payloads over 6 MB; HTTP APIs reject request bodies over 10 MB.
LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024
HTTP_API_BODY_LIMIT = 10 * 1024 * 1024
RECEIVE_WAIT_S = 1  # short long-poll so Ctrl-C is quick; Lambda's poller waits up to 20 s

log = logging.getLogger("imgsim.serve")
# Template variables the local stack sets itself: they name AWS resources (the bucket, SSM parameters, a Qdrant
# server) or the deployed service. QDRANT_URL, IMGSIM_API_KEY and the like still come from this shell if set.
LOCAL_VARIABLES = ("AWS_ENDPOINT_URL", "IMAGES_BUCKET", "QDRANT_URL", "QDRANT_API_KEY_PARAM", "IMGSIM_API_KEY_PARAM",
                   "POWERTOOLS_SERVICE_NAME")
# How often `imgsim serve` checks whether the embedded index needs a background build.
INDEX_CHECK_SECONDS = 10
# How often it deletes trash entries past IMGSIM_TRASH_DAYS (S3's lifecycle rule does it on AWS).
TRASH_CHECK_SECONDS = 3600


class StackError(Exception):
    """A start-up problem worth one line on stderr (exit 2: usage, 1: anything else)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StackStopping(Exception):
    """The stack is stopping: no more invocations."""


# One invocation of a function of the stack: (function name, event, timeout in seconds) -> its result. The event
# source and the HTTP front end call the functions only through this; StackStopping once the stack stops.
Invoke = Callable[[str, dict[str, Any], int], Any]

