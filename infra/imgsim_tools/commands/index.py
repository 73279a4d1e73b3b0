"""Index image files and folders (recursively) into Qdrant. Files that are not images are skipped with a warning;
re-indexing a file replaces its point.

Reading image files named on the command line is here too (``load_file``, ``load_batches``,
``read_image_argument``): ``imgsim embed``, ``search`` and ``compare`` read theirs the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imgsim.decode import DecodedImage
from imgsim.errors import ImageError, StoreError

from ..progress import Bar
from .common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, UsageError, positive_int

if TYPE_CHECKING:  # imgsim.pipeline is imported by `imgsim index` only (~30 ms other commands do not pay)
    from imgsim.pipeline import BatchReport, EventOutcome

    from ..session import Session

# Files embedded and upserted together by `imgsim index`: large enough to amortize
# the Qdrant round trip, small enough that a Ctrl-C loses little work.
DEFAULT_INDEX_BATCH = 64

log = logging.getLogger("imgsim.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument(
        "--batch-size", type=positive_int, default=DEFAULT_INDEX_BATCH, metavar="N",
        help=f"files embedded and stored together (default {DEFAULT_INDEX_BATCH})",
    )


def run(args: argparse.Namespace, session: Session) -> int:
    return cmd_index(session, args)


# -- reading image files ----------------------------------------------------------


@dataclass
class LoadedFile:
    path: Path
    image: DecodedImage | None = None
    size: int = 0
    error: Exception | None = None  # ImageError: skipped; anything else: failed


def load_file(path: Path, embedder, region=None) -> LoadedFile:
    """Read and decode one file (``Embedder.decode``: the same guard rails as the
    Lambdas; ``region``: only that part of it); never raises for a bad or unreadable file."""
    try:
        with open(path, "rb") as fh:
            # One byte over the limit is enough for the decoder to reject an oversized
            # file without reading all of it.
            data = fh.read(embedder.settings.max_image_bytes + 1)
        image = embedder.decode(data, region)
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


def read_image_argument(path: str, embedder, region=None) -> DecodedImage:
    """An image named on the command line (``region``: only that part of it): a missing file or a non-image is a
    usage error."""
    loaded = load_file(Path(path), embedder, region)
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


# -- indexing -----------------------------------------------------------------------


@dataclass
class IndexSummary:
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"indexed {self.indexed}, skipped {self.skipped}, failed {self.failed} "
            f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s)"
        )

    def add(self, report: BatchReport) -> None:
        from imgsim.pipeline import FAILED, INDEXED, SKIPPED

        self.indexed += report.count(INDEXED)
        self.skipped += report.count(SKIPPED)
        self.failed += report.count(FAILED)


def _progress_bar(total: int) -> Bar | None:
    """A bar on a terminal; None when stderr is a pipe or file (or tqdm is not installed)."""
    bar = Bar(total=total, unit="img", terminal_only=True, leave=False)
    return bar if bar.shown else None


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

    options = session.app_settings.index
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
            # Embedded store: build HNSW now, while nothing else uses it (docs/performance.md "Scale").
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

