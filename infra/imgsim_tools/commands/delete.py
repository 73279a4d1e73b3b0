"""Move indexed images to the trash (by id or key): gone from search at once, restorable with `imgsim trash restore`
for IMGSIM_TRASH_DAYS (30). The same as ``DELETE /images/{id}``.

    imgsim delete ID_OR_KEY [ID_OR_KEY ...]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import TYPE_CHECKING

from imgsim.errors import ImgsimError, InvalidRequest, NotFound

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .trash import trash_service

if TYPE_CHECKING:
    from imgsim.store import VectorStore

    from ..session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("refs", nargs="+", metavar="ID_OR_KEY", help="an image id, or its key in the images bucket")


def run(args: argparse.Namespace, session: Session) -> int:
    service = trash_service(session)
    bucket = session.app_settings.api.images_bucket
    store = session.served_store()
    failed = 0
    for ref in args.refs:
        try:
            image_id = _image_id(ref, store, bucket)
            done = service.delete(image_id)
        except ImgsimError as exc:
            print(f"imgsim delete: {ref}: {exc}", file=sys.stderr)
            if isinstance(exc, InvalidRequest):
                return EXIT_USAGE
            failed += 1
            continue
        print(f"moved to the trash: {done['key']} ({done['id']}); restore with `imgsim trash restore "
              f"{done['trash_id']}` until {done['expires_at']}")
    return EXIT_FAILURE if failed else EXIT_OK


def _image_id(ref: str, store: VectorStore, bucket: str | None) -> str:
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    record = store.find_by_key(ref, bucket=bucket)
    if record is None:
        raise NotFound(f"no indexed image with id or key {ref!r}")
    return str(record.id)
