"""Copy every point (and the indexer's tombstones) between the embedded store (QDRANT_PATH) and a Qdrant server
collection. Idempotent and resumable: run it again after an interruption.

The copying itself is ``imgsim_tools.migrate``; this is the command around it: which side is which, the server's
key, the checkpoint folder and the progress bar.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from imgsim import settings as names
from imgsim.deployment import open_model_store

from ..migrate import migrate
from ..progress import Bar
from .common import EXIT_FAILURE, EXIT_OK, UsageError, positive_int

if TYPE_CHECKING:
    from ..session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", metavar="URL", help="copy the embedded store to this Qdrant server")
    direction.add_argument("--from", dest="from_url", metavar="URL", help="copy this server's collection here")
    parser.add_argument(
        "--api-key-env", default=None, metavar="NAME",
        help="environment variable holding the server's API key (default: QDRANT_API_KEY when set)",
    )
    parser.add_argument("--remote-collection", metavar="NAME", help="collection on the server (default: --collection)")
    parser.add_argument("--page", type=positive_int, default=256, metavar="N", help="points per batch (default 256)")


def run(args: argparse.Namespace, session: Session) -> int:
    """Copy the embedded store to a Qdrant server (--to) or a server's collection here (--from)."""
    url = args.to or args.from_url
    key = session.environ.get(args.api_key_env or names.QDRANT_API_KEY) or None
    if args.api_key_env and not key:
        raise UsageError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    local_settings = dataclasses.replace(session.settings, qdrant_url=None)
    remote_settings = dataclasses.replace(
        session.settings, qdrant_url=url, qdrant_api_key=key,
        collection=args.remote_collection or session.settings.collection,
    )
    embedder_dim = session.embedder.dim
    model = session.embedder.model_name  # both sides: that model's collection behind the alias
    local = open_model_store(local_settings, dim=embedder_dim, model=model)
    remote = open_model_store(remote_settings, dim=embedder_dim, model=model)
    source, target = (local, remote) if args.to else (remote, local)
    bar = Bar(total=source.count(), unit="img", terminal_only=True, leave=False)
    try:
        summary = migrate(
            source, target, page=args.page, checkpoint_dir=Path(local_settings.qdrant_path) / ".migrate"
            if local_settings.qdrant_path != ":memory:" else None,
            on_page=bar.update,
        )
    finally:
        bar.close()
        local.close()
        remote.close()
    direction = f"to {url}" if args.to else f"from {url}"
    print(f"migrated {direction}: {summary.line()}")
    return EXIT_OK if summary.target_count >= summary.source_count or not args.to else EXIT_FAILURE
