"""Print an indexed image's stored details, its duplicate group and a presigned URL (by id or key): the same as
``GET /images/{id}``, and the same service (``imgsim.services.images``).

    imgsim get ID_OR_KEY [--json]
    imgsim --api URL get ID [--json]

Against an API (``--api``) the image is named by its id: the API looks up no keys here. An image in a duplicate
group shows ``duplicates`` (the one to keep: how many others) or ``duplicate_of`` (another member: the one to keep).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from imgsim.errors import ImgsimError, InvalidRequest

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .delete import image_id_of

if TYPE_CHECKING:
    from ..api_client import ApiClient
    from ..session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", metavar="ID_OR_KEY", help="an image id, or its key in the images bucket (--api: an id)")
    parser.add_argument("--json", action="store_true", help="print the image's document as JSON")


def run(args: argparse.Namespace, session: Session) -> int:
    from imgsim.objects import S3Objects
    from imgsim.services import ImageService

    s3 = S3Objects(lambda: session.client("s3"))
    service = ImageService(session.app_settings.api, store=session.served_store, objects=lambda: s3)
    try:
        image = service.get(image_id_of(args.ref, session.served_store(), session.app_settings.api.images_bucket))
    except ImgsimError as exc:
        print(f"imgsim get: {args.ref}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, InvalidRequest) else EXIT_FAILURE
    return write(image, as_json=args.json)


def run_remote(args: argparse.Namespace, api: ApiClient) -> int:
    from ..api_client import ApiError
    from ..remote import exit_code, item_error, not_an_id

    problem = not_an_id(args.ref)
    if problem:
        print(f"imgsim get: {args.ref}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        image = api.get_image(args.ref)
    except ApiError as exc:
        if not item_error(exc):
            raise
        print(f"imgsim get: {args.ref}: {exc.message}", file=sys.stderr)
        return exit_code(exc)
    return write(dict(image), as_json=args.json)


def write(image: dict[str, Any], *, as_json: bool) -> int:
    """The document as JSON, or one ``field  value`` line per field in the API's order."""
    if as_json:
        print(json.dumps(image, indent=2))
        return EXIT_OK
    width = max(len(name) for name in image)
    for name, value in image.items():
        shown = "-" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else value
        print(f"{name:<{width}}  {shown}")
    return EXIT_OK
