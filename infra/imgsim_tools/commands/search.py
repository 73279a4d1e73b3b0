"""Print the indexed images most similar to IMAGE, best first, with score (0..1) and percent.

With ``--api URL`` the API searches (``POST /search``, page after page up to ``--limit``), printed the same way;
its JSON results carry what the API's do (a presigned ``url``, ``similar``).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from imgsim.dedupe import INTERNAL_FIELDS
from imgsim.errors import InvalidRequest

from .common import EXIT_OK, UsageError, positive_int, unit_float
from .index import read_image_argument

if TYPE_CHECKING:
    from imgsim.services import Box

    from ..api_client import ApiClient, SearchResult
    from ..session import Session

# The most results one POST /search answers (its ``limit``), and the furthest it pages (``offset``).
API_PAGE_MAX = 100
API_OFFSET_MAX = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("--limit", type=positive_int, default=10, metavar="N", help="results to show (default 10)")
    parser.add_argument("--min-score", type=unit_float, default=None, metavar="X",
                        help="only results scoring at least X (0..1)")
    parser.add_argument("--prefix", default=None, metavar="P",
                        help="only keys starting with P (an absolute path for indexed files)")
    parser.add_argument("--box", type=box_argument, default=None, metavar="X,Y,W,H",
                        help="search with this region of IMAGE only: its top left corner and size, each a fraction "
                             "(0..1) of the upright image's width or height, e.g. 0.25,0.25,0.5,0.5")
    parser.add_argument("--json", action="store_true", help='print {"results": [...]} as JSON')


def box_argument(text: str) -> Box:
    """--box as the API's ``box`` parameter reads it (the same checks, the same messages)."""
    # Imported only with --box: the HTTP side's modules cost start-up time every search would pay.
    from imgsim.http.inputs import parse_box

    try:
        box = parse_box(text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    assert box is not None
    return box


def run(args: argparse.Namespace, session: Session) -> int:
    store = session.open_store(one_shot=True)  # one search, then the process exits
    # Open the store while the query is decoded and embedded: Pillow and TFLite release the
    # GIL, and opening is the one cost a one-shot search has over `imgsim compare` (docs/performance.md "Scale").
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgsim-open") as pool:
        opened = pool.submit(store.ensure_collection)
        embedder = session.embedder
        region = args.box.region if args.box is not None else None
        vector = embedder.embed_decoded([read_image_argument(args.image, embedder, region)])[0]
        opened.result()
    if store.count() == 0:
        if args.json:
            print(json.dumps({"results": []}))
        print("no images indexed", file=sys.stderr if args.json else sys.stdout)
        return EXIT_OK
    hits = store.search(vector, limit=args.limit, min_score=args.min_score, prefix=args.prefix)
    return write([hit_json(hit) for hit in hits], as_json=args.json)


def run_remote(args: argparse.Namespace, api: ApiClient) -> int:
    from ..api_client import ApiError
    from ..remote import read_file

    image = read_file(args.image)
    # `imgsim search --box`: str(Box) is the API's box parameter (plain decimals, as the API reads it).
    box = str(args.box) if args.box is not None else None
    results: list[SearchResult] = []
    offset: int | None = 0
    while offset is not None and offset <= API_OFFSET_MAX and len(results) < args.limit:
        try:
            page = api.search(image, limit=min(API_PAGE_MAX, args.limit - len(results)), offset=offset,
                              min_score=args.min_score, prefix=args.prefix, box=box)
        except ApiError as exc:
            if exc.status in (400, 413, 415) and exc.code != "bad_parameter":  # the query image's fault: name it
                raise UsageError(f"{args.image}: {exc}") from exc
            raise
        results.extend(page["results"])
        offset = page["next_offset"]
    return write([dict(result) for result in results], as_json=args.json)


def write(results: list[dict[str, Any]], *, as_json: bool) -> int:
    """The results as a table (rank, percent, score, key) or as ``{"results": [...]}``."""
    if as_json:
        print(json.dumps({"results": results}, indent=2))
        return EXIT_OK
    if not results:
        print("no matches")
        return EXIT_OK
    print(f"{'rank':>4}  {'similar':>7}  {'score':>6}  key")
    for rank, result in enumerate(results, start=1):
        print(f"{rank:>4}  {result['percent']:>6.1f}%  {result['score']:>6.4f}  {display_key(result, result['id'])}")
    return EXIT_OK


def hit_json(hit: Any) -> dict[str, Any]:
    """One search result: id, key, score, percent, then the payload without its bookkeeping (the ``dirs`` filter
    field, the duplicate signature and links)."""
    result: dict[str, Any] = {"id": hit.id, "key": hit.payload.get("key"), "score": hit.score, "percent": hit.percent}
    result.update((k, v) for k, v in hit.payload.items() if k not in result and k not in INTERNAL_FIELDS)
    return result


def display_key(payload: dict[str, Any], point_id: str) -> str:
    """What a person reads in the table: the file's path, or s3://bucket/key for objects
    the S3 indexer stored (the same Qdrant collection can hold both)."""
    key = payload.get("key")
    if key is None:
        return point_id
    bucket = payload.get("bucket")
    return f"s3://{bucket}/{key}" if bucket and payload.get("source", "s3") == "s3" else str(key)
