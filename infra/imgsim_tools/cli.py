"""The ``imgsim`` command: embed, index, search and compare local images.

``imgsim backfill`` and ``imgsim serve`` delegate to ``imgsim_tools.backfill`` and
``imgsim_tools.local.command``; each of those modules brings its own
options through ``add_arguments(parser)`` and does its work in ``run(args)``.

Exit codes: 0 success, 1 failure (store unreachable, model missing, files that
could not be read), 2 bad usage or input (unknown option, missing file, not an
image), 130 interrupted (Ctrl-C). Errors go to stderr as one line; ``-v`` adds
tracebacks and debug logs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from imgsim.decode import DecodedImage
from imgsim.errors import ImageError, StoreError
from imgsim.scoring import percent_from_score, score_from_cosine
from imgsim.settings import Settings

if TYPE_CHECKING:  # imgsim.pipeline is imported by `imgsim index` only (~30 ms other commands do not pay)
    from imgsim.pipeline import BatchReport, EventOutcome

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

# Files embedded and upserted together by `imgsim index`: large enough to amortize
# the Qdrant round trip, small enough that a Ctrl-C loses little work.
DEFAULT_INDEX_BATCH = 64

log = logging.getLogger("imgsim.cli")


class UsageError(Exception):
    """Bad input from the user (missing file, not an image): exit code 2."""


# -- settings and shared objects ------------------------------------------------


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Environment settings with the global command-line overrides applied."""
    settings = Settings.from_env()
    url, path, collection = (getattr(args, name, None) for name in ("qdrant_url", "qdrant_path", "collection"))
    if url and path:
        raise UsageError("give either --qdrant-url or --qdrant-path, not both")
    if url:
        settings = dataclasses.replace(settings, qdrant_url=url)
    if path:
        # An explicit local path wins over a QDRANT_URL in the environment.
        settings = dataclasses.replace(settings, qdrant_path=path, qdrant_url=None)
    if collection:
        settings = dataclasses.replace(settings, collection=collection)
    param = os.environ.get("QDRANT_API_KEY_PARAM")
    if settings.qdrant_url and param and not settings.qdrant_api_key:
        from imgsim.runtime import read_secret_parameter

        settings = dataclasses.replace(settings, qdrant_api_key=read_secret_parameter(param))
    return settings


class Session:
    """The objects one command needs, built on first use and closed at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.verbose = bool(getattr(args, "verbose", False))
        self.settings = settings_from_args(args)
        self._embedder: Any = None
        self._store: Any = None

    @property
    def embedder(self):
        if self._embedder is None:
            from imgsim.embedder import Embedder

            with _fd2_silenced(enabled=not self.verbose):
                self._embedder = Embedder(settings=self.settings)
        return self._embedder

    @property
    def store(self):
        if self._store is None:
            from imgsim.store import open_store

            self._store = open_store(
                self.settings, dim=self.embedder.dim, one_shot=getattr(self.args, "command", None) == "search",
                model=self.embedder.model_name,
            )
        return self._store

    def close(self) -> None:
        if self._store is not None:
            # Embedded Qdrant holds a file lock on its folder until closed.
            self._store.close()
            self._store = None


@contextmanager
def _fd2_silenced(enabled: bool = True):
    """Point file descriptor 2 at /dev/null for the duration.

    TFLite's C++ runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate"
    straight to fd 2 (not through Python) when an interpreter is built; no setting
    turns it off, and it would otherwise interleave with our own messages.
    """
    try:
        if not enabled:
            raise ValueError("not silencing")
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# -- reading image files ----------------------------------------------------------


@dataclass
class LoadedFile:
    path: Path
    image: DecodedImage | None = None
    size: int = 0
    error: Exception | None = None  # ImageError: skipped; anything else: failed


def load_file(path: Path, embedder) -> LoadedFile:
    """Read and decode one file (``Embedder.decode``: the same guard rails as the
    Lambdas); never raises for a bad or unreadable file."""
    try:
        with open(path, "rb") as fh:
            # One byte over the limit is enough for the decoder to reject an oversized
            # file without reading all of it.
            data = fh.read(embedder.settings.max_image_bytes + 1)
        image = embedder.decode(data)
        return LoadedFile(path, image=image, size=len(data))
    except Exception as exc:  # noqa: BLE001 - reported per file by the caller
        return LoadedFile(path, error=exc)


def load_batches(
    paths: Sequence[Path], batch_size: int, load: Callable[[Path], LoadedFile]
) -> Iterator[list[LoadedFile]]:
    """Batches of loaded files, in order; the next batch is read and decoded in a
    background thread while the caller embeds the current one (Pillow and TFLite
    release the GIL, so the two overlap). At most two batches are in memory."""
    batches = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgsim-load") as pool:

        def submit(batch: list[Path]):
            return pool.submit(lambda: [load(p) for p in batch])

        pending = submit(batches[0])
        for i in range(len(batches)):
            current = pending.result()
            if i + 1 < len(batches):
                pending = submit(batches[i + 1])
            yield current


def read_image_argument(path: str, embedder) -> DecodedImage:
    """An image named on the command line: a missing file or a non-image is a usage error."""
    loaded = load_file(Path(path), embedder)
    if isinstance(loaded.error, (ImageError, OSError)):
        raise UsageError(f"{path}: {_describe(loaded.error)}")
    if loaded.error is not None:
        raise loaded.error
    assert loaded.image is not None
    return loaded.image


def _describe(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def collect_files(paths: Sequence[str]) -> list[Path]:
    """Files named and files under folders named (recursively, sorted, hidden entries
    such as .git or .DS_Store left out), each once."""
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        candidate = Path(root) / name
                        found.setdefault(os.path.abspath(candidate), candidate)
        elif path.exists():
            found.setdefault(os.path.abspath(path), path)
        else:
            raise UsageError(f"{raw}: no such file or directory")
    return list(found.values())


def vector_json(vector: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32:
    exact, and about half the text of printing them as float64."""
    return [float(str(x)) for x in vector.astype(np.float32)]


# -- commands -------------------------------------------------------------------------


def cmd_embed(session: Session, args: argparse.Namespace) -> int:
    embedder = session.embedder
    bad = 0
    paths = [Path(p) for p in args.files]
    load = lambda p: load_file(p, embedder)
    for batch in load_batches(paths, DEFAULT_INDEX_BATCH, load):
        good = [f for f in batch if f.image is not None]
        vectors = iter(embedder.embed_decoded([f.image for f in good]))
        for loaded in batch:
            if loaded.error is not None:
                if not isinstance(loaded.error, (ImageError, OSError)):
                    raise loaded.error
                print(f"imgsim: error: {loaded.path}: {_describe(loaded.error)}", file=sys.stderr)
                bad += 1
                continue
            line = {"file": str(loaded.path), "vector": vector_json(next(vectors)), "model": embedder.model_name}
            print(json.dumps(line, separators=(",", ":")))
    return EXIT_USAGE if bad else EXIT_OK


@dataclass
class IndexSummary:
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0

    def add(self, report: BatchReport) -> None:
        from imgsim.pipeline import FAILED, INDEXED, SKIPPED

        self.indexed += report.count(INDEXED)
        self.skipped += report.count(SKIPPED)
        self.failed += report.count(FAILED)

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"indexed {self.indexed}, skipped {self.skipped}, failed {self.failed} "
            f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s)"
        )


def _progress_bar(total: int):
    """A tqdm bar on a terminal; None when stderr is a pipe or file (or tqdm is not installed)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False)


class FileWarnings:
    """The report stage of `imgsim index` (imgsim.pipeline.Reporter): one warning line per file that was
    not indexed, as the path was named, where the Lambda logs a record per object. A store error is left
    to the command, which stops on it: a local run has no queue to redeliver the batch."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn

    def outcome(self, outcome: EventOutcome) -> None:
        from imgsim.pipeline import FAILED, SKIPPED

        if outcome.status not in (SKIPPED, FAILED) or isinstance(outcome.error, StoreError):
            return
        error = outcome.error
        what = _describe(error) if isinstance(error, Exception) else outcome.reason
        self.warn(f"imgsim: warning: {outcome.status} {outcome.message_id}: {what}")
        if outcome.status == FAILED and error is not None:
            log.debug("reading %s failed", outcome.message_id, exc_info=error)

    def warning(self, message: str) -> None:
        log.warning(message)


def store_error(report: BatchReport) -> StoreError | None:
    """The store failure of a batch, if it had one."""
    for outcome in report.outcomes:
        if isinstance(outcome.error, StoreError):
            return outcome.error
    return None


def cmd_index(session: Session, args: argparse.Namespace) -> int:
    """Index files through the IndexFunction's pipeline (imgsim.pipeline) with local files for a source: the
    same payload, ordering and duplicate check as uploads (IMGSIM_DEDUPE=off turns the check off)."""
    from imgsim.pipeline import build, file_events
    from imgsim.settings import IndexSettings

    options = IndexSettings.from_env()
    files = collect_files(args.paths)
    embedder, store = session.embedder, session.store
    summary = IndexSummary()
    bar = _progress_bar(len(files))

    def warn(message: str) -> None:
        if bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def finish(prefix: str = "") -> None:
        summary.seconds = time.perf_counter() - started
        if bar is not None:
            bar.close()
        print(f"{prefix}{summary.line()}")

    pipeline = build(store=store, embedder=embedder, options=options, reporter=FileWarnings(warn))
    pipeline.ensure_collections()  # a wrong collection fails now, not after the first batch
    size = args.batch_size
    batches = (file_events(files[i : i + size]) for i in range(0, len(files), size))
    started = time.perf_counter()
    try:
        # The next batch is read and decoded while this one is embedded and written; a Ctrl-C waits for
        # the batch being written, so the summary is exact (Pipeline.stream).
        with contextlib.closing(pipeline.stream(batches)) as reports:
            for number, report in enumerate(reports, start=1):
                error = store_error(report)
                if error is not None:
                    raise error
                summary.add(report)
                if bar is not None:
                    bar.update(len(report.message_ids))
                log.debug("batch %d: %d files embedded", number, len(report.message_ids))
        unindexed = store.unindexed_count()
        if unindexed >= session.settings.index_threshold:
            # Embedded store: build HNSW now, while nothing else uses it (README "Scale").
            warn(f"imgsim: building the search index for {unindexed} new points...")
            store.optimize()
    except KeyboardInterrupt:
        finish("interrupted: ")
        return EXIT_INTERRUPTED
    except StoreError:
        finish("stopped: ")
        raise
    finish()
    return EXIT_FAILURE if summary.failed else EXIT_OK


def cmd_migrate(session: Session, args: argparse.Namespace) -> int:
    """Copy the embedded store to a Qdrant server (--to) or a server's collection here (--from)."""
    from imgsim.store import open_store

    from .migrate import migrate

    url = args.to or args.from_url
    key = os.environ.get(args.api_key_env or "QDRANT_API_KEY") or None
    if args.api_key_env and not key:
        raise UsageError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    local_settings = dataclasses.replace(session.settings, qdrant_url=None)
    remote_settings = dataclasses.replace(
        session.settings, qdrant_url=url, qdrant_api_key=key,
        collection=args.remote_collection or session.settings.collection,
    )
    embedder_dim = session.embedder.dim
    model = session.embedder.model_name  # both sides: that model's collection behind the alias
    local = open_store(local_settings, dim=embedder_dim, model=model)
    remote = open_store(remote_settings, dim=embedder_dim, model=model)
    source, target = (local, remote) if args.to else (remote, local)
    bar = _progress_bar(source.count())
    try:
        summary = migrate(
            source, target, page=args.page, checkpoint_dir=Path(local_settings.qdrant_path) / ".migrate"
            if local_settings.qdrant_path != ":memory:" else None,
            on_page=(lambda n: bar.update(n)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
        local.close()
        remote.close()
    direction = f"to {url}" if args.to else f"from {url}"
    print(f"migrated {direction}: {summary.line()}")
    return EXIT_OK if summary.target_count >= summary.source_count or not args.to else EXIT_FAILURE


def hit_json(hit) -> dict[str, Any]:
    """One search result: id, key, score, percent, then the payload without the
    internal ``dirs`` filter field."""
    result: dict[str, Any] = {"id": hit.id, "key": hit.payload.get("key"), "score": hit.score, "percent": hit.percent}
    result.update((k, v) for k, v in hit.payload.items() if k not in result and k != "dirs")
    return result


def display_key(payload: dict[str, Any], point_id: str) -> str:
    """What a person reads in the table: the file's path, or s3://bucket/key for objects
    the S3 indexer stored (the same Qdrant collection can hold both)."""
    key = payload.get("key")
    if key is None:
        return point_id
    bucket = payload.get("bucket")
    return f"s3://{bucket}/{key}" if bucket and payload.get("source", "s3") == "s3" else str(key)


def cmd_search(session: Session, args: argparse.Namespace) -> int:
    store = session.store
    # Open the store while the query is decoded and embedded: Pillow and TFLite release the
    # GIL, and opening is the one cost a one-shot search has over `imgsim compare` (README "Scale").
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgsim-open") as pool:
        opened = pool.submit(store.ensure_collection)
        embedder = session.embedder
        vector = embedder.embed_decoded([read_image_argument(args.image, embedder)])[0]
        opened.result()
    if store.count() == 0:
        if args.json:
            print(json.dumps({"results": []}))
        print("no images indexed", file=sys.stderr if args.json else sys.stdout)
        return EXIT_OK
    hits = store.search(vector, limit=args.limit, min_score=args.min_score, prefix=args.prefix)
    if args.json:
        print(json.dumps({"results": [hit_json(hit) for hit in hits]}, indent=2))
        return EXIT_OK
    if not hits:
        print("no matches")
        return EXIT_OK
    print(f"{'rank':>4}  {'similar':>7}  {'score':>6}  key")
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank:>4}  {hit.percent:>6.1f}%  {hit.score:>6.4f}  {display_key(hit.payload, hit.id)}")
    return EXIT_OK


def cmd_compare(session: Session, args: argparse.Namespace) -> int:
    embedder = session.embedder
    images = [read_image_argument(path, embedder) for path in (args.a, args.b)]
    first, second = embedder.embed_decoded(images)
    # Unit-length vectors: the dot product is the cosine similarity.
    score = score_from_cosine(float(np.dot(first, second)))
    percent = percent_from_score(score)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "score": score, "percent": percent, "model": embedder.model_name}))
    else:
        print(f"{percent:.1f}% similar (score {score:.4f})")
    return EXIT_OK


# -- delegated commands (backfill, duplicates, reindex, serve) ------------------------------------------------


def load_backfill() -> ModuleType:
    from . import backfill

    return backfill


def load_local_stack() -> ModuleType:
    """The local stack runs the project's handlers and reads its template: it needs the checkout
    (found as imgsim_tools.project says), reported in one line when there is none."""
    from .project import ProjectNotFound, project_root

    try:
        project_root()
    except ProjectNotFound as exc:
        raise UsageError(f"imgsim serve: {exc}") from exc
    from .local import command

    return command


def load_reindex() -> ModuleType:
    from . import reindex

    return reindex


def load_duplicates() -> ModuleType:
    from . import duplicates_cmd

    return duplicates_cmd


DELEGATED: dict[str, tuple[str, Callable[[], ModuleType]]] = {
    "backfill": ("index existing S3 objects (s3://bucket/prefix)", load_backfill),
    "duplicates": ("list and resolve groups of duplicate images", load_duplicates),
    "reindex": ("build a model's collection from the bucket, then switch to it (--model NAME)", load_reindex),
    "serve": ("run the whole stack on this machine (local S3, queue, API, web page)", load_local_stack),
}

GLOBAL_ENV = {"qdrant_url": "QDRANT_URL", "qdrant_path": "QDRANT_PATH", "collection": "QDRANT_COLLECTION"}


def run_delegated(command: str, argv: list[str], global_args: argparse.Namespace) -> int:
    help_text, load = DELEGATED[command]
    module = load()
    # conflict_handler="resolve": an option the module defines itself wins over a global one.
    parser = argparse.ArgumentParser(
        prog=f"imgsim {command}",
        description=" ".join((module.__doc__ or help_text).strip().split("\n\n")[0].split()),
        parents=[_global_options()],
        conflict_handler="resolve",
    )
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    for name, default in (*((name, None) for name in GLOBAL_ENV), ("verbose", False)):
        if not hasattr(args, name):
            setattr(args, name, getattr(global_args, name, default))
    settings_from_args(args)  # validates the overrides (e.g. --qdrant-url with --qdrant-path)
    # The delegates use imgsim.runtime (and may start child processes), which read the
    # environment: the global options reach them as the environment variables they override.
    for name, variable in GLOBAL_ENV.items():
        value = getattr(args, name, None)
        if value:
            os.environ[variable] = value
    if getattr(args, "qdrant_path", None):
        os.environ.pop("QDRANT_URL", None)
    from imgsim import runtime

    runtime.reset()
    return int(module.run(args) or 0)


# -- argument parsing -----------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imgsim")
    except PackageNotFoundError:
        return "unknown"


def _global_options() -> argparse.ArgumentParser:
    """Options accepted before and after the command. SUPPRESS defaults keep a
    command's parser from overwriting a value given before the command."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("--collection", default=argparse.SUPPRESS, help="Qdrant collection (QDRANT_COLLECTION, default images)")
    group.add_argument(
        "--qdrant-path", default=argparse.SUPPRESS, metavar="DIR",
        help="embedded Qdrant folder (QDRANT_PATH, default ./.data/qdrant; ':memory:' for a throwaway store)",
    )
    group.add_argument(
        "--qdrant-url", default=argparse.SUPPRESS, metavar="URL",
        help="Qdrant server URL (QDRANT_URL; key from QDRANT_API_KEY or the QDRANT_API_KEY_PARAM SSM parameter)",
    )
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logs and tracebacks")
    return common


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="imgsim",
        description="Image similarity search: embed, index, search and compare images.",
        epilog="Exit codes: 0 success, 1 failure, 2 bad usage or input, 130 interrupted.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"imgsim {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    embed = commands.add_parser(
        "embed", parents=[common], help="print image vectors as JSON lines",
        description='Print one JSON object per file: {"file", "vector", "model"}.',
    )
    embed.add_argument("files", nargs="+", metavar="FILE")
    embed.set_defaults(func=cmd_embed)

    index = commands.add_parser(
        "index", parents=[common], help="index image files and folders",
        description="Index image files and folders (recursively) into Qdrant. Files that are not images are "
        "skipped with a warning; re-indexing a file replaces its point.",
    )
    index.add_argument("paths", nargs="+", metavar="PATH")
    index.add_argument(
        "--batch-size", type=_positive_int, default=DEFAULT_INDEX_BATCH, metavar="N",
        help=f"files embedded and stored together (default {DEFAULT_INDEX_BATCH})",
    )
    index.set_defaults(func=cmd_index)

    search = commands.add_parser(
        "search", parents=[common], help="find indexed images similar to an image",
        description="Print the indexed images most similar to IMAGE, best first, with score (0..1) and percent.",
    )
    search.add_argument("image", metavar="IMAGE")
    search.add_argument("--limit", type=_positive_int, default=10, metavar="N", help="results to show (default 10)")
    search.add_argument("--min-score", type=_unit_float, default=None, metavar="X", help="only results scoring at least X (0..1)")
    search.add_argument("--prefix", default=None, metavar="P", help="only keys starting with P (an absolute path for indexed files)")
    search.add_argument("--json", action="store_true", help='print {"results": [...]} as JSON')
    search.set_defaults(func=cmd_search)

    compare = commands.add_parser(
        "compare", parents=[common], help="similarity of two images",
        description="Print how similar two images are: score (0..1) and percent.",
    )
    compare.add_argument("a", metavar="A")
    compare.add_argument("b", metavar="B")
    compare.add_argument("--json", action="store_true", help="print the result as JSON")
    compare.set_defaults(func=cmd_compare)

    migrate = commands.add_parser(
        "migrate", parents=[common], help="copy the embedded index to a Qdrant server, or back",
        description="Copy every point (and the indexer's tombstones) between the embedded store (QDRANT_PATH) "
        "and a Qdrant server collection. Idempotent and resumable: run it again after an interruption.",
    )
    direction = migrate.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", metavar="URL", help="copy the embedded store to this Qdrant server")
    direction.add_argument("--from", dest="from_url", metavar="URL", help="copy this server's collection here")
    migrate.add_argument(
        "--api-key-env", default=None, metavar="NAME",
        help="environment variable holding the server's API key (default: QDRANT_API_KEY when set)",
    )
    migrate.add_argument("--remote-collection", metavar="NAME", help="collection on the server (default: --collection)")
    migrate.add_argument("--page", type=_positive_int, default=256, metavar="N", help="points per batch (default 256)")
    migrate.set_defaults(func=cmd_migrate)

    for name, (help_text, _) in DELEGATED.items():
        # Options are parsed later by the module's own parser, so importing it (the local
        # stack pulls in moto and more) only happens when the command runs.
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


# -- entry point --------------------------------------------------------------------------------


@contextmanager
def _log_to_stderr(verbose: bool):
    """imgsim's log records on stderr for the length of one command."""
    package_logger = logging.getLogger("imgsim")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("imgsim: %(levelname)s: %(message)s"))
    old_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)


def _fail(message: str, code: int, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"imgsim: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command not in DELEGATED:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    verbose = bool(getattr(args, "verbose", False))
    session: Session | None = None
    with _log_to_stderr(verbose):
        try:
            if args.command in DELEGATED:
                return run_delegated(args.command, extra, args)
            session = Session(args)
            return args.func(session, args)
        except SystemExit as exc:  # a delegated command's argparse
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        except KeyboardInterrupt:
            print("imgsim: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except UsageError as exc:
            return _fail(str(exc), EXIT_USAGE, verbose)
        except BrokenPipeError:
            # Output piped into `head` and the like: stop quietly, as other Unix tools do.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return EXIT_FAILURE
        except Exception as exc:  # noqa: BLE001 - one line for the user; the traceback with -v
            return _fail(str(exc) or type(exc).__name__, EXIT_FAILURE, verbose)
        finally:
            if session is not None:
                session.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
