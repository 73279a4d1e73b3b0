"""Move indexed images to the trash (by id or key): gone from search at once, restorable with `imgsim trash restore`
for IMGSIM_TRASH_DAYS (30). The same as ``DELETE /images/{id}``.

    imgsim delete ID_OR_KEY [ID_OR_KEY ...]
    imgsim --api URL delete ID [ID ...]

Against an API (``--api``) images are named by id: the API looks up no keys for a delete.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import TYPE_CHECKING, Any

from imgsim.errors import ImgsimError, InvalidRequest, NotFound

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .trash import trash_service

if TYPE_CHECKING:
    from imgsim.store import VectorStore

    from ..api_client import ApiClient
    from ..session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("refs", nargs="+", metavar="ID_OR_KEY",
                        help="an image id, or its key in the images bucket (with --api: an id)")


def run(args: argparse.Namespace, session: Session) -> int:
    service = trash_service(session)
    bucket = session.app_settings.api.images_bucket
    store = session.served_store()
    failed = 0
    for ref in args.refs:
        try:
            image_id = image_id_of(ref, store, bucket)
            done = service.delete(image_id)
        except ImgsimError as exc:
            print(f"imgsim delete: {ref}: {exc}", file=sys.stderr)
            if isinstance(exc, InvalidRequest):
                return EXIT_USAGE
            failed += 1
            continue
        print(moved(done))
    return EXIT_FAILURE if failed else EXIT_OK


def run_remote(args: argparse.Namespace, api: ApiClient) -> int:
    from ..api_client import ApiError
    from ..remote import item_error, not_an_id

    malformed = [(ref, problem) for ref in args.refs if (problem := not_an_id(ref))]
    for ref, problem in malformed:  # before anything is deleted
        print(f"imgsim delete: {ref}: {problem}", file=sys.stderr)
    if malformed:
        return EXIT_USAGE
    failed = 0
    for ref in args.refs:
        try:
            done = api.delete_image(ref)
        except ApiError as exc:
            if not item_error(exc):
                raise
            print(f"imgsim delete: {ref}: {exc.message}", file=sys.stderr)
            if exc.status == 400:
                return EXIT_USAGE
            failed += 1
            continue
        print(moved(dict(done)))
    return EXIT_FAILURE if failed else EXIT_OK


def moved(done: dict[str, Any]) -> str:
    """What one image moved to the trash prints (``imgsim delete``, ``imgsim duplicates --resolve``)."""
    return (f"moved to the trash: {done['key']} ({done['id']}); restore with `imgsim trash restore "
            f"{done['trash_id']}` until {done['expires_at']}")


def image_id_of(ref: str, store: VectorStore, bucket: str | None) -> str:
    """The id of the image ``ref`` names: itself if it is an id, else the id of the indexed image with that key."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    record = store.find_by_key(ref, bucket=bucket)
    if record is None:
        raise NotFound(f"no indexed image with id or key {ref!r}")
    return str(record.id)
