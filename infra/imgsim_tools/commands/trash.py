"""Images deleted through imgsim wait in the trash for IMGSIM_TRASH_DAYS (30): list, restore or empty it.

    imgsim trash list [--json]
    imgsim trash restore TRASH_ID [TRASH_ID ...]
    imgsim trash empty [--expired] --yes

``restore`` brings back the object, the point and its duplicate links (``imgsim.services.trash``); ``empty``
deletes for good (all entries, or ``--expired`` only: what S3's lifecycle rule does on AWS). ``imgsim delete``
moves images to the trash.

With ``--api URL``, ``list`` and ``restore`` go through the API (``GET /trash``, ``POST /trash/{id}/restore``),
printed the same way; the API has no route to empty the trash (its entries go after IMGSIM_TRASH_DAYS).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imgsim.errors import ImgsimError, InvalidRequest

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from imgsim.services import TrashService

    from ..api_client import ApiClient
    from ..session import Session

PAGE_SIZE = 100  # entries read per page (the API's most)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="list|restore|empty")
    listing = actions.add_parser("list", help="what is in the trash, newest first")
    listing.add_argument("--json", action="store_true", help='print {"items", "trash_days"} as JSON')
    restore = actions.add_parser("restore", help="bring images back (their trash ids, from `imgsim trash list`)")
    restore.add_argument("ids", nargs="+", metavar="TRASH_ID")
    empty = actions.add_parser("empty", help="delete what is in the trash for good")
    empty.add_argument("--expired", action="store_true", help="only entries past the trash period")
    empty.add_argument("--yes", action="store_true", help="really delete (required)")


def trash_service(session: Session) -> TrashService:
    from imgsim.objects import S3Objects
    from imgsim.services import TrashService

    s3 = S3Objects(lambda: session.client("s3"))
    return TrashService(session.app_settings.api, store=session.served_store, objects=lambda: s3)


def run(args: argparse.Namespace, session: Session) -> int:
    service = trash_service(session)
    try:
        if args.action == "list":
            return list_trash(lambda cursor: service.list(limit=PAGE_SIZE, cursor=cursor), args.json)
        if args.action == "restore":
            for trash_id in args.ids:
                print(restored(service.restore(trash_id)))
            return EXIT_OK
        if not args.yes:
            print("imgsim trash empty: add --yes to delete for good", file=sys.stderr)
            return EXIT_USAGE
        gone = service.empty(expired_only=args.expired)
        print(f"deleted {gone} trash entries for good")
        return EXIT_OK
    except ImgsimError as exc:
        print(f"imgsim trash: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, InvalidRequest) else EXIT_FAILURE


def run_remote(args: argparse.Namespace, api: ApiClient) -> int:
    from ..api_client import ApiError
    from ..remote import exit_code, item_error

    if args.action == "empty":
        print("imgsim trash empty: the API has no route to empty the trash (entries go for good after "
              "IMGSIM_TRASH_DAYS); run it without --api on the stack's Qdrant and bucket", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "list":
        return list_trash(lambda cursor: dict(api.trash(limit=PAGE_SIZE, cursor=cursor)), args.json)
    for trash_id in args.ids:
        try:
            print(restored(dict(api.restore_from_trash(trash_id))))
        except ApiError as exc:
            if not item_error(exc):
                raise
            print(f"imgsim trash: {exc.message}", file=sys.stderr)
            return exit_code(exc)
    return EXIT_OK


def restored(done: dict[str, Any]) -> str:
    return f"restored {done['key']} ({done['id']})"


def list_trash(read_page: Callable[[str | None], dict[str, Any]], as_json: bool) -> int:
    """Every page of the trash (``read_page(cursor)``), as a table or as ``{"items", "trash_days"}``."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = read_page(cursor)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    if as_json:
        print(json.dumps({"items": items, "trash_days": page["trash_days"]}, indent=2))
        return EXIT_OK
    if not items:
        print("the trash is empty")
        return EXIT_OK
    for item in items:
        print(f"{item['id']}  {item['trashed_at']}  until {item['expires_at']}  {item['key']}")
    print(f"{len(items)} in the trash (kept {page['trash_days']} days)")
    return EXIT_OK
