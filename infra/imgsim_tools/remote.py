"""What a command runs with against a deployed API (``imgsim --api URL``): the client, and how its errors end.

The counterpart of ``session.py`` for the API: no settings are read, no Qdrant, model or S3 client is touched; the
command module's ``run_remote(args, api)`` runs on an ``imgsim_tools.api_client.ApiClient``. The key comes from
IMGSIM_API_KEY, the variable ``imgsim serve`` takes its own key from (one shell runs both), never from the command
line, where shell history and ``ps`` would show it.

Exit codes as for the local commands: an API refusing the request's input (400, 413 too large, 415 not an image
type) or its key (401, 403) is 2, bad usage or input; anything else (404, 409, throttling that outlasted the
retries, an API that is down or unreachable) is 1. Commands report the answers about one item of several (an
unknown id among the ids to delete) per item and go on, as the local path does with imgsim's errors.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from imgsim.settings import API_KEY

from .api_client import ApiClient, ApiError
from .commands.common import EXIT_FAILURE, EXIT_USAGE, UsageError
from .commands.index import _describe

# Refusals of the request's own input, or of its key: exit 2.
USAGE_STATUSES = frozenset({400, 401, 403, 413, 415})
# Answers about one item (its id, its file, its state): reported per item by the commands that take several.
ITEM_STATUSES = frozenset({400, 404, 409, 413, 415})
# Options of the direct Qdrant connection, meaningless against an API.
QDRANT_OPTIONS = ("qdrant_url", "qdrant_path", "collection")
KEY_HINT = "a key printed by `imgsim keys create`, or the local stack's banner"


def run(module: ModuleType, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the command's ``run_remote`` against ``args.api``; an ApiError it lets through ends it in one line."""
    name = module.__name__.rsplit(".", 1)[-1]
    run_remote = getattr(module, "run_remote", None)
    if run_remote is None:
        raise UsageError(f"imgsim {name} works on Qdrant or local files, not through the API: drop --api")
    given = [f"--{option.replace('_', '-')}" for option in QDRANT_OPTIONS if getattr(args, option, None)]
    if given:
        raise UsageError(f"--api talks to the API; {', '.join(given)} is for a direct Qdrant connection")
    with connect(args.api, environ) as api:
        try:
            return int(run_remote(args, api) or 0)
        except ApiError as exc:
            raise failure(exc) from exc


def connect(url: str, environ: Mapping[str, str]) -> ApiClient:
    key = environ.get(API_KEY, "").strip()
    if not key:
        raise UsageError(f"--api needs the API's key in {API_KEY} ({KEY_HINT})")
    try:
        return ApiClient(url, key)
    except ValueError as exc:
        raise UsageError(f"--api: {exc}") from exc


def failure(exc: ApiError) -> Exception:
    """The error the dispatcher reports for ``exc``: a UsageError (exit 2) or the ApiError itself (exit 1)."""
    if exc.status == 401:
        return UsageError(f"{exc}; check {API_KEY}")
    if exc.status == 403:  # the message names the key and the scope it lacks
        return UsageError(f"{exc}; use a key with that scope in {API_KEY} (imgsim keys create --scopes ...)")
    if exc.status in USAGE_STATUSES:
        return UsageError(str(exc))
    return exc


def item_error(exc: ApiError) -> bool:
    """Whether ``exc`` is about one item of a command's several (report it and go on), not about the whole run."""
    return exc.status in ITEM_STATUSES


def exit_code(exc: ApiError) -> int:
    return EXIT_USAGE if exc.status in USAGE_STATUSES else EXIT_FAILURE


def not_an_id(ref: str) -> str | None:
    """Why ``ref`` cannot name an image through the API (which looks images up by id only), or None for an id."""
    try:
        uuid.UUID(ref)
    except ValueError:
        return "through the API an image is named by its id (a UUID), not by its key"
    return None


def read_file(path: str) -> bytes:
    """The bytes of a file named on the command line (a query image): a missing file is a usage error; whether
    it is an image is the API's to say."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {_describe(exc)}") from exc
