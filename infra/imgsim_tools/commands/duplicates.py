"""List and resolve groups of duplicate images (copies, crops, mirrors, edits of one picture).

Groups are read from the duplicate links the indexer writes (``imgsim.dedupe``; the rule in
``imgsim.duplicates``): the same as ``GET /duplicates``. On a collection indexed before links existed (no
point has one), or with ``--rescan``, groups are computed here from the stored search vectors instead: each
image's nearest neighbours at the raw-cosine threshold calibrated for the same false-pair rate
(``RAW_THRESHOLD``; lower recall than the indexer's grey signatures, which need the pixels), grouped around the
image to keep so that no group chains unrelated images.

    imgsim duplicates [--threshold T] [--prefix P] [--json | --csv] [--rescan]
    imgsim duplicates --resolve --keep ID [--remove ID ...] [--not-duplicates ID ...] [--yes]

Removing moves the images to the trash (``imgsim trash``; restorable for IMGSIM_TRASH_DAYS): a dry run unless
``--yes``. Only duplicates of the image kept are removed (the server's check, ``imgsim.services.curation``).

With ``--api URL`` the API lists the groups (``GET /duplicates``, every page) and resolves them
(``POST /duplicates/resolve``), printed the same way; ``--rescan`` reads the stored vectors, so it needs Qdrant.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imgsim.errors import ImgsimError
from imgsim.settings import DEFAULT_DUPLICATE_THRESHOLD

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from ..api_client import ApiClient
    from ..session import Session

# bench_duplicates.py: raw cosine of the search vectors at <= 1 false pair per 30 look-alikes.
RAW_THRESHOLD = 0.74


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="minimum similarity 0..1 (default: IMGSIM_DUPLICATE_THRESHOLD, 0.74; --rescan: 0.74)")
    parser.add_argument("--prefix", default=None, metavar="P", help="only groups whose image to keep starts with P")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help='print {"threshold", "groups", "next_cursor"} as JSON')
    output.add_argument("--csv", action="store_true", help="print one CSV row per group member")
    parser.add_argument("--rescan", action="store_true",
                        help="compute groups from the stored vectors instead of the indexer's records")
    parser.add_argument("--resolve", action="store_true", help="resolve one group (with --keep)")
    parser.add_argument("--keep", metavar="ID", help="--resolve: the image to keep")
    parser.add_argument("--remove", nargs="+", default=[], metavar="ID",
                        help="--resolve: move these duplicates of --keep to the trash")
    parser.add_argument("--not-duplicates", nargs="+", default=[], metavar="ID",
                        help="--resolve: these are not duplicates of --keep (never grouped again)")
    parser.add_argument("--yes", action="store_true", help="--resolve: really move them (default: a dry run)")


def run(args: argparse.Namespace, session: Session) -> int:
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        print("imgsim duplicates: --threshold must be between 0 and 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.resolve:
            return resolve(args, session)
        return list_groups(args, session)
    except ImgsimError as exc:
        print(f"imgsim duplicates: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def list_groups(args: argparse.Namespace, session: Session) -> int:
    from imgsim.dedupe import SIG_FIELD
    from imgsim.duplicates import DuplicateGroups
    from imgsim.store import FieldMissing, Where

    store = session.served_store()
    recorded = store.count(Where(must_not=(FieldMissing(SIG_FIELD),)))
    if args.rescan or not recorded:
        if not args.rescan:
            print("imgsim duplicates: no image here has a duplicate signature; grouping by the stored vectors "
                  "(run `imgsim backfill --force` to record signatures)", file=sys.stderr)
        threshold = RAW_THRESHOLD if args.threshold is None else args.threshold
        groups = rescan(store, threshold, args.prefix)
    else:
        configured = session.app_settings.index.duplicate_check or DEFAULT_DUPLICATE_THRESHOLD
        threshold = args.threshold if args.threshold is not None else configured
        groups = [g.as_json() for g in DuplicateGroups(store).all(threshold=threshold, prefix=args.prefix)]
    write(groups, threshold, args)
    return EXIT_OK


def rescan(store: Any, threshold: float, prefix: str | None) -> list[dict[str, Any]]:
    """Groups from the search vectors alone: in keep order, each image not yet grouped takes the not yet
    grouped images within ``threshold`` of it (directly: no chains)."""
    from imgsim.duplicates import MEMBER_FIELDS, keep_order
    from imgsim.store import Record

    records: list[Record] = []
    offset = None
    while True:
        page, offset = store.scroll(limit=1000, offset=offset, with_vectors=True)
        records.extend(r for r in page if not prefix or str(r.payload.get("key", "")).startswith(prefix))
        if offset is None:
            break
    grouped: set[str] = set()
    groups = []
    for record in sorted(records, key=keep_order):
        if record.id in grouped or record.vector is None:
            continue
        hits = [h for h in store.search(record.vector, limit=20, min_score=threshold, prefix=prefix,
                                        exclude_ids=[record.id]) if h.id not in grouped]
        if not hits:
            continue
        grouped.update([record.id, *(h.id for h in hits)])
        members = [{"id": record.id, "score": 1.0, **{f: record.payload.get(f) for f in MEMBER_FIELDS}}]
        members += [{"id": h.id, "score": round(h.score, 4), **{f: h.payload.get(f) for f in MEMBER_FIELDS}}
                    for h in hits]
        groups.append({"keep": record.id, "members": members})
    return groups


def write(groups: list[dict[str, Any]], threshold: float, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps({"threshold": threshold, "groups": groups, "next_cursor": None}, indent=2))
        return
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["group", "keep", "id", "key", "score", "width", "height", "size", "indexed_at"])
        for n, group in enumerate(groups, start=1):
            for m in group["members"]:
                writer.writerow([n, "yes" if m["id"] == group["keep"] else "", m["id"], m["key"], m["score"],
                                 m["width"], m["height"], m["size"], m["indexed_at"]])
        return
    if not groups:
        print(f"no duplicate groups at threshold {threshold}")
        return
    for n, group in enumerate(groups, start=1):
        print(f"group {n}: {len(group['members'])} images")
        for m in group["members"]:
            mark = "keep" if m["id"] == group["keep"] else f"{m['score'] * 100:5.1f}%"
            print(f"  {mark:>6}  {m['width']}x{m['height']}  {m['size']:>9} B  {m['key']}  ({m['id']})")
    print(f"{len(groups)} groups, {sum(len(g['members']) for g in groups)} images at threshold {threshold}")


def resolve(args: argparse.Namespace, session: Session) -> int:
    from imgsim.errors import ImgsimError, InvalidRequest
    from imgsim.objects import S3Objects
    from imgsim.services import CurationService, Resolution

    if not resolve_usage(args):
        return EXIT_USAGE
    store = session.served_store()
    if args.remove and not args.yes:
        records = {r.id: r for r in store.retrieve(args.remove)}
        dry_run(args.remove, lambda point_id: records[point_id].payload.get("key") if point_id in records else None)
        remove: list[str] = []
    else:
        remove = list(args.remove)
    if not remove and not args.not_duplicates:
        return EXIT_OK
    s3 = S3Objects(lambda: session.client("s3"))
    service = CurationService(session.app_settings.api, embedder=session.served_embedder,
                              store=session.served_store, objects=lambda: s3)
    try:
        result = service.resolve(Resolution(keep=args.keep, remove=remove, not_duplicates=args.not_duplicates))
    except ImgsimError as exc:
        print(f"imgsim duplicates: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, InvalidRequest) else EXIT_FAILURE
    return write_resolution(result)


def resolve_usage(args: argparse.Namespace) -> bool:
    if not args.keep or not (args.remove or args.not_duplicates):
        print("imgsim duplicates: --resolve needs --keep and --remove and/or --not-duplicates", file=sys.stderr)
        return False
    return True


def dry_run(remove: list[str], key_of: Callable[[str], Any]) -> None:
    for point_id in remove:
        print(f"would move to the trash: {key_of(point_id) or '(not indexed)'} ({point_id})")
    print("dry run: nothing moved; add --yes to move them to the trash", file=sys.stderr)


def write_resolution(result: dict[str, Any]) -> int:
    from .delete import moved

    for item in result["removed"]:
        print(moved(item))
    for point_id in result["not_duplicates"]:
        print(f"not a duplicate of {result['keep']}: {point_id}")
    return EXIT_OK


# -- against an API ----------------------------------------------------------------------------------------------------


def run_remote(args: argparse.Namespace, api: ApiClient) -> int:
    from ..api_client import ApiError
    from ..remote import exit_code, item_error

    if args.threshold is not None and not 0 <= args.threshold <= 1:
        print("imgsim duplicates: --threshold must be between 0 and 1", file=sys.stderr)
        return EXIT_USAGE
    if args.rescan:
        print("imgsim duplicates: --rescan reads the stored vectors: run it without --api, on the stack's Qdrant",
              file=sys.stderr)
        return EXIT_USAGE
    if not args.resolve:
        pages = list(api.all_duplicates(threshold=args.threshold, prefix=args.prefix))
        write([dict(group) for page in pages for group in page["groups"]], pages[0]["threshold"], args)
        return EXIT_OK
    try:
        return resolve_remote(args, api)
    except ApiError as exc:
        if not item_error(exc):  # the images named: unknown, not duplicates of --keep, in the trash
            raise
        print(f"imgsim duplicates: {exc.message}", file=sys.stderr)
        return exit_code(exc)


def resolve_remote(args: argparse.Namespace, api: ApiClient) -> int:
    if not resolve_usage(args):
        return EXIT_USAGE
    remove: list[str] = list(args.remove)
    if remove and not args.yes:
        dry_run(remove, lambda point_id: (api.find_image(point_id) or {"key": None})["key"])
        remove = []
    if not remove and not args.not_duplicates:
        return EXIT_OK
    result = api.resolve_duplicates(args.keep, remove=remove, not_duplicates=args.not_duplicates)
    return write_resolution({**result, "removed": [dict(item) for item in result["removed"]]})
