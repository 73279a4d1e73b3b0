"""Embedded backend: Qdrant Edge (``qdrant-edge-py``, pinned), Qdrant's own engine in-process.

Used by the CLI, ``imgsim serve`` and the tests when ``QDRANT_URL`` is unset; it is
not in the Lambda layer (the deployed functions always talk to a server). Figures
at 100k 1024-d points on 2 cores (docs/performance.md "Scale"): open 0.3 s, search ~1 ms with
HNSW, where qdrant-client's local mode took 21 s to open and 0.5 s per search.

Layout under ``QDRANT_PATH``: one Edge shard per collection (``<path>/<collection>``),
the lock file (``edge_lock``), and during a background index build
``<collection>.building`` / ``<collection>.old``.

Durability: Edge writes every update to its write-ahead log before ``update``
returns, so an acknowledged write survives ``kill -9`` (tests/store/test_edge.py).

Building the HNSW index. ``EdgeShard.optimize()`` holds the GIL for its whole run
(measured: a spinning Python thread drops from 25M to 23k iterations/s, a search
waits the full 20 s at 30k points), so running it on a thread would stop the API.
``build_index_in_background`` therefore optimizes a *copy* of the shard in a child
process while this one keeps serving reads and writes, journals the writes made
meanwhile, replays them into the built copy, and then swaps it in: replay the last
few, close, rename, reopen. Writers wait for the copy, readers and writers for the
swap (measured at 100k points: docs/performance.md "Scale"), never for the build itself. The renames are ordered so that a crash at any step
leaves either the old or the complete new shard, with every acknowledged write
(``_recover`` finishes or undoes a half-done swap on open).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as qe

from ..errors import CollectionMismatch, StoreError
from .base import (
    COMPANION_SUFFIXES,
    Catalog,
    ScoredRecord,
    StorageOptions,
    VectorStore,
    floats,
)
from .edge_lock import FolderLock
from .rwlock import RWLock
from .types import (
    INDEXED_FIELDS,
    TENANT_INDEXED,
    IdIn,
    PayloadIndex,
    Record,
    StoredPoint,
    Where,
    translate,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

READY_MARK = "imgsim-build-complete"
# HNSW parameters: Qdrant's defaults (m 16, ef_construct 100); segments below
# full_scan_threshold KB are searched exactly, which is faster there.
HNSW_M, HNSW_EF_CONSTRUCT, HNSW_FULL_SCAN_KB = 16, 100, 10_000


class _Filters:
    """Qdrant Edge's filter classes, for ``translate``."""

    @staticmethod
    def combine(must: list[Any], should: list[Any], must_not: list[Any]) -> qe.Filter:
        return qe.Filter(must=must or None, should=should or None, must_not=must_not or None)

    @staticmethod
    def equals(field: str, value: str | int | bool) -> Any:
        return qe.FieldCondition(key=field, match=qe.MatchValue(value))

    @staticmethod
    def any_of(field: str, values: list[str]) -> Any:
        return qe.FieldCondition(key=field, match=qe.MatchAny(values))

    @staticmethod
    def missing(field: str) -> Any:
        return qe.IsEmptyCondition(field)

    @staticmethod
    def has_ids(ids: list[str]) -> Any:
        return qe.HasIdCondition(set(ids))

    @staticmethod
    def range(field: str, gte: float | str | None, lte: float | str | None, datetime: bool) -> Any:
        if datetime:
            bounds: Any = qe.RangeDateTime(gte=None if gte is None else str(gte), lte=None if lte is None else str(lte))
        else:
            bounds = qe.RangeFloat(gte=None if gte is None else float(gte), lte=None if lte is None else float(lte))
        return qe.FieldCondition(key=field, range=bounds)


def to_filter(where: Where | None) -> qe.Filter | None:
    return translate(where, _Filters())


def edge_config(dim: int, options: StorageOptions, indexing_threshold_kb: int | None = None) -> qe.EdgeConfig:
    """Memory placement. Quantized settings: the quantized copy and the originals ``Cold``
    (memory-mapped, the kernel's page cache keeps what searches touch) rather than
    ``Cached``/``always_ram`` (read into RAM on every open): measured at 20k points, int8, open
    0.12 s instead of 0.43 s, with the same warm search latency (docs/performance.md "Scale"). ``none``
    keeps its float vectors in RAM, as the setting promises: HNSW over memory-mapped floats
    measured 2.9 ms p50 at 100k against 0.75 ms. Qdrant servers keep ``always_ram`` (``server.py``)."""
    quantization: Any = None
    if options.quantization == "int8":
        quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Cold)
    elif options.quantization == "binary":
        quantization = qe.BinaryQuantizationConfig(memory=qe.Memory.Cold)
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(
            size=dim, distance=qe.Distance.Cosine,
            memory=qe.Memory.Cold if options.quantized and options.originals_on_disk else qe.Memory.Cached,
        ),
        hnsw_config=qe.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=HNSW_FULL_SCAN_KB),
        quantization_config=quantization,
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb) if indexing_threshold_kb else None,
    )


def _index_schema(field: str) -> Any:
    """A payload field's keyword index; a tenant field's says ``is_tenant`` (Qdrant's multitenancy)."""
    if field in TENANT_INDEXED:
        return qe.KeywordIndexParams(is_tenant=True)
    return qe.PayloadSchemaType.Keyword


def _search_params(options: StorageOptions) -> qe.SearchParams | None:
    if not options.quantized and options.hnsw_ef is None:
        return None
    quant = (
        qe.QuantizationSearchParams(rescore=options.rescore, oversampling=options.oversampling)
        if options.quantized and options.search_quantized
        else qe.QuantizationSearchParams(ignore=True) if options.quantized else None
    )
    return qe.SearchParams(hnsw_ef=options.hnsw_ef, quantization=quant)


class _Folder:
    """What the collections of one QDRANT_PATH share: the lock, and the temp dir of a ':memory:' store."""

    def __init__(self, path: str) -> None:
        self.temporary = path == ":memory:"
        self.root = Path(tempfile.mkdtemp(prefix="imgsim-edge-")) if self.temporary else Path(path)
        self.lock = FolderLock(self.root)
        self.stores: list[EdgeStore] = []

    def release(self) -> None:
        self.lock.release()
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)


class EdgeStore(VectorStore):
    backend = "edge"

    def __init__(
        self, path: str, collection: str, *, dim: int, options: StorageOptions | None = None,
        indexing_threshold_kb: int | None = None, _folder: _Folder | None = None,
    ) -> None:
        """``indexing_threshold_kb``: segments smaller than this are searched exactly, not indexed
        (Edge's default, 10,000 KB, is ~2,400 vectors of 1024 floats)."""
        super().__init__(collection, dim=dim, options=options)
        self._owner = _folder is None
        self._folder = _folder or _Folder(path)
        self._folder.stores.append(self)
        self.dir = self._folder.root / collection
        self._shard: Any = None
        self._lock = RWLock()
        self._writers_gate = threading.Lock()  # held by writers, and by a build while it copies the shard
        self._journal: list[Any] | None = None  # updates made while a copy is being built
        self._building = threading.Lock()
        self._params = _search_params(self.options)
        self._indexing_threshold_kb = indexing_threshold_kb
        self._child: subprocess.Popen[str] | None = None
        self.last_build: dict[str, float] = {}  # seconds per step of the last background build
        self._closed = False

    def describe(self) -> str:
        return f"embedded Qdrant Edge at {self._folder.root}" if not self._folder.temporary else "embedded (in memory)"

    # -- opening ----------------------------------------------------------------------------------------------

    def _create_or_check(self) -> None:
        with self._lock.write():
            self._recover()
            legacy = self._folder.root / "collection" / self.collection / "storage.sqlite"
            if not self.dir.exists() and legacy.exists():
                log.warning(
                    "%s holds a collection of the old embedded mode (qdrant-client local mode), which imgsim no "
                    "longer reads; re-index into Qdrant Edge (imgsim index / imgsim backfill), then delete %s",
                    self._folder.root, legacy.parent,
                )
            self._shard = self._open(self.dir)

    def _open(self, directory: Path) -> Any:
        config = edge_config(self.dim, self.options, self._indexing_threshold_kb)
        try:
            if (directory / "edge_config.json").exists():
                self._check_persisted(directory)
                shard = qe.EdgeShard.load(str(directory), config)
                indexed = set(shard.info().payload_schema)
                for field in INDEXED_FIELDS:  # a collection from an older imgsim lacks the newer ones
                    if field not in indexed:
                        shard.update(qe.UpdateOperation.create_field_index(field, _index_schema(field)))
            else:
                shard = qe.EdgeShard.create(str(directory), config)
                for field in INDEXED_FIELDS:
                    shard.update(qe.UpdateOperation.create_field_index(field, _index_schema(field)))
        except CollectionMismatch:
            raise
        except Exception as exc:
            message = str(exc)
            if "ncompatible" in message:
                raise CollectionMismatch(
                    f"collection {self.collection!r} at {directory} does not match the model (vectors of size "
                    f"{self.dim}, Cosine): {message.split(': ', 1)[-1]}; use another QDRANT_COLLECTION or "
                    "QDRANT_PATH, or delete it"
                ) from exc
            raise StoreError(f"cannot open the index at {directory}: {message}") from exc
        return shard

    def _check_persisted(self, directory: Path) -> None:
        """The same one-line mismatch error as the server backend, from the shard's saved config."""
        try:
            vectors = json.loads((directory / "edge_config.json").read_text()).get("vectors", {})
        except (OSError, ValueError):
            return  # let Edge itself judge the folder
        params = vectors.get("") if isinstance(vectors, dict) else None
        if not isinstance(params, dict):
            raise CollectionMismatch(
                f"collection {self.collection!r} uses named vectors; imgsim needs one unnamed vector"
            )
        size, distance = params.get("size"), params.get("distance")
        if size != self.dim or distance != "Cosine":
            raise CollectionMismatch(
                f"collection {self.collection!r} has vectors of size {size} with {distance} distance, but the "
                f"model needs size {self.dim} with Cosine; use another QDRANT_COLLECTION or delete this one "
                f"({directory})"
            )

    def _recover(self) -> None:
        """Finish or undo a background build that a crash interrupted (see the module docstring)."""
        building, old = self._sidecar("building"), self._sidecar("old")
        if not self.dir.exists():
            if (building / READY_MARK).exists():
                building.rename(self.dir)  # crashed between the two renames: the new shard is complete
            elif old.exists():
                old.rename(self.dir)
        if (self.dir / READY_MARK).exists():
            (self.dir / READY_MARK).unlink()
        for leftover in (building, old):
            if leftover.exists():
                shutil.rmtree(leftover)

    def _sidecar(self, kind: str) -> Path:
        return self.dir.with_name(f"{self.collection}.{kind}")

    # -- primitives -------------------------------------------------------------------------------------------

    def _read(self, fn: Callable[[Any], T]) -> T:
        with self._lock.read():
            self._check_open()
            try:
                return fn(self._shard)
            except (ValueError, TypeError):
                raise
            except Exception as exc:
                raise StoreError(f"embedded store: {exc}") from exc

    def _update(self, operation: Any) -> None:
        with self._writers_gate, self._lock.write():
            self._check_open()
            try:
                self._shard.update(operation)
            except ValueError as exc:
                raise StoreError(f"embedded store refused the update: {exc}") from exc
            except Exception as exc:
                raise StoreError(f"embedded store: {exc}") from exc
            if self._journal is not None:
                self._journal.append(operation)

    def _check_open(self) -> None:
        if self._closed or self._shard is None:
            raise StoreError(f"the index at {self.dir} is closed")

    def _upsert(self, points: Sequence[StoredPoint], only_if: Where | None) -> None:
        structs = [qe.Point(p.id, floats(p.vector), p.payload) for p in points]
        self._update(qe.UpdateOperation.upsert_points(structs, condition=to_filter(only_if)))

    def _delete(self, selector: IdIn | Where) -> None:
        if isinstance(selector, IdIn):
            self._update(qe.UpdateOperation.delete_points(list(selector.ids)))
        else:
            self._update(qe.UpdateOperation.delete_points_by_filter(to_filter(selector) or qe.Filter()))

    def _set_fields(self, where: Where, fields: Mapping[str, Any]) -> None:
        self._update(qe.UpdateOperation.set_payload_by_filter(to_filter(where) or qe.Filter(), dict(fields)))

    def _retrieve(self, ids: Sequence[str], with_vectors: bool) -> list[Record]:
        found = self._read(lambda s: s.retrieve(list(ids), True, with_vectors))
        return [_record(p) for p in found]

    def _scroll(
        self, where: Where | None, limit: int, offset: str | None, with_vectors: bool, fields: Sequence[str] | None
    ) -> tuple[list[Record], str | None]:
        request = qe.ScrollRequest(
            offset=offset, limit=limit, filter=to_filter(where), with_vector=with_vectors,
            with_payload=qe.PayloadSelector.Include(list(fields)) if fields is not None else True,
        )
        found, next_offset = self._read(lambda s: s.scroll(request))
        return [_record(p) for p in found], (str(next_offset) if next_offset is not None else None)

    def _count(self, where: Where | None) -> int:
        request = qe.CountRequest(exact=True, filter=to_filter(where))
        return int(self._read(lambda s: s.count(request)))

    def _query(
        self, vector: Sequence[float], limit: int, offset: int, where: Where | None, score_threshold: float | None
    ) -> list[ScoredRecord]:
        request = qe.QueryRequest(
            limit=limit, offset=offset, query=qe.Query.Nearest(list(vector)), filter=to_filter(where),
            score_threshold=score_threshold, with_payload=True, with_vector=False, params=self._params,
        )
        found = self._read(lambda s: s.query(request))
        return [ScoredRecord(str(p.id), float(p.score), dict(p.payload or {})) for p in found]

    def _query_batch(self, requests: Sequence[tuple[Sequence[float], int, Where | None]], score_threshold: float | None,
                     fields: Sequence[str] | None) -> list[list[ScoredRecord]]:
        payload = qe.PayloadSelector.Include(list(fields)) if fields is not None else True
        batch = qe.QueryBatchRequest([
            qe.QueryRequest(limit=limit, offset=0, query=qe.Query.Nearest(list(vector)), filter=to_filter(where),
                            score_threshold=score_threshold, with_payload=payload, with_vector=False,
                            params=self._params)
            for vector, limit, where in requests
        ])
        found = self._read(lambda s: s.query_batch(batch))
        return [[ScoredRecord(str(p.id), float(p.score), dict(p.payload or {})) for p in points] for points in found]

    def companion(self, suffix: str, *, dim: int, options: StorageOptions | None = None) -> EdgeStore:
        """One instance per collection and folder: an Edge shard can be open only once per process."""
        name = self.collection + suffix
        for store in self._folder.stores:
            if store.collection == name and not store._closed:
                return store
        return EdgeStore(
            str(self._folder.root), name, dim=dim, options=options or StorageOptions(quantization="none"),
            _folder=self._folder,
        )

    def close(self) -> None:
        """Close this collection; the store that opened the folder also closes its companions
        and releases the folder's lock. A background build still running is stopped (its copy is
        removed on the next open)."""
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()
        with self._lock.write():
            if self._closed:
                return
            self._closed = True
            if self._shard is not None:
                self._shard.close()
                self._shard = None
        if self._owner:
            for other in list(self._folder.stores):
                if other is not self:
                    other.close()
            self._folder.release()

    # -- indexing ---------------------------------------------------------------------------------------------

    def payload_indexes(self) -> dict[str, PayloadIndex]:
        self.ensure_collection()
        schema = self._read(lambda s: s.info()).payload_schema
        return {name: PayloadIndex(str(info.data_type).rsplit(".", 1)[-1].lower(),
                                   bool(getattr(info.params, "is_tenant", False))) for name, info in schema.items()}

    def unindexed_count(self) -> int:
        self.ensure_collection()
        info = self._read(lambda s: s.info())
        return max(0, int(info.points_count) - int(info.indexed_vectors_count))

    def optimize(self) -> None:
        """Build HNSW (and quantized copies) now, in this process: for batch jobs (``imgsim index``)
        that have nothing else to serve meanwhile. ``imgsim serve`` uses ``build_index_in_background``."""
        self.ensure_collection()
        with self._lock.write():
            self._check_open()
            self._shard.optimize()

    def build_index_in_background(self, on_done: Callable[[bool, str], None] | None = None) -> threading.Thread | None:
        """Start the copy-build-swap described in the module docstring; None if one is running."""
        self.ensure_collection()
        if not self._building.acquire(blocking=False):
            return None
        thread = threading.Thread(target=self._build_and_swap, args=(on_done,), name="edge-index-build", daemon=True)
        thread.start()
        return thread

    def _build_and_swap(self, on_done: Callable[[bool, str], None] | None) -> None:
        building = self._sidecar("building")
        steps: dict[str, float] = {}
        mark = time.perf_counter()
        built: Any = None
        try:
            shutil.rmtree(building, ignore_errors=True)
            # A consistent copy: writers wait at the gate (so they do not queue on the
            # writer-preferring lock and hold back searches), searches go on under the read side.
            with self._writers_gate, self._lock.read():
                self._check_open()
                self._shard.flush()
                shutil.copytree(self.dir, building, ignore=shutil.ignore_patterns(READY_MARK))
                self._journal = []
            steps["copy"], mark = time.perf_counter() - mark, time.perf_counter()
            self._child = subprocess.Popen(
                [sys.executable, "-c", "import sys; from imgsim.store.edge import _optimize_main; _optimize_main(sys.argv[1])",
                 str(building)],
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            _, stderr = self._child.communicate()
            if self._child.returncode != 0:
                raise StoreError(f"index build failed ({self._child.returncode}): {stderr.strip()[-500:]}")
            steps["build"], mark = time.perf_counter() - mark, time.perf_counter()
            # Open the built copy and catch up with the journal while the live shard still serves;
            # only the last few journaled writes are replayed with everything held back.
            built = self._open(building)
            applied = 0
            while True:
                pending = list((self._journal or [])[applied:])
                for operation in pending:
                    built.update(operation)
                applied += len(pending)
                if len(pending) < 16:
                    break
            steps["catch_up"], mark = time.perf_counter() - mark, time.perf_counter()
            with self._lock.write():
                self._check_open()
                for operation in (self._journal or [])[applied:]:
                    built.update(operation)
                built.flush()
                built.close()
                built = None
                (building / READY_MARK).touch()
                self._shard.close()
                self._shard = None
                self.dir.rename(self._sidecar("old"))
                building.rename(self.dir)
                self._shard = self._open(self.dir)
                (self.dir / READY_MARK).unlink()
                replayed, self._journal = len(self._journal or []), None
            steps["swap"] = time.perf_counter() - mark
            shutil.rmtree(self._sidecar("old"), ignore_errors=True)
            self.last_build = {**steps, "replayed": replayed}
            log.info("index built: copy %.2f s, build %.2f s (child process), swap %.2f s (%d writes replayed)",
                     steps["copy"], steps["build"], steps["swap"], replayed)
            if on_done:
                on_done(True, "index built")
        except Exception as exc:  # noqa: BLE001 - a failed build leaves the live shard serving as before
            log.warning("background index build failed: %s", exc)
            if built is not None:
                built.close()
            with self._lock.write():
                self._journal = None
                if self._shard is None and not self._closed:
                    self._recover()
                    self._shard = self._open(self.dir)
            shutil.rmtree(building, ignore_errors=True)
            if on_done:
                on_done(False, str(exc))
        finally:
            self._building.release()


class EdgeCatalog(Catalog):
    """The collections of one embedded folder (QDRANT_PATH) and their aliases.

    Qdrant Edge is a shard library: it has no aliases, so they are kept here in ``aliases.json``
    beside the collections, replaced whole by a rename (atomic on POSIX), fsynced. The folder is
    locked by this process while the catalog is open, as for any embedded store.
    """

    ALIASES = "aliases.json"

    def __init__(self, path: str) -> None:
        self._folder = _Folder(path)

    def describe(self) -> str:
        return f"embedded Qdrant Edge at {self._folder.root}" if not self._folder.temporary else "embedded (in memory)"

    def open_store(self, collection: str, *, dim: int, options: StorageOptions | None = None) -> EdgeStore:
        for store in self._folder.stores:  # an Edge shard can be open only once per process
            if store.collection == collection and not store._closed:
                return store
        return EdgeStore(str(self._folder.root), collection, dim=dim, options=options, _folder=self._folder)

    def _aliases(self) -> dict[str, str]:
        try:
            return dict(json.loads((self._folder.root / self.ALIASES).read_text()))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StoreError(f"{self._folder.root / self.ALIASES} is not valid JSON: {exc}") from exc

    def open_owned(self, collection: str, *, dim: int, options: StorageOptions | None = None) -> EdgeStore:
        store = self.open_store(collection, dim=dim, options=options)
        store._owner = True  # closing it closes the folder's other collections and releases the lock
        return store

    def alias_target(self, alias: str) -> str | None:
        return self._aliases().get(alias)

    def exists(self, collection: str) -> bool:
        return (self._folder.root / collection / "edge_config.json").is_file()

    def switch_alias(self, alias: str, collection: str) -> None:
        if self.exists(alias):
            raise StoreError(f"{alias!r} is a collection in {self._folder.root}; an alias cannot take its name")
        if not self.exists(collection):
            raise StoreError(f"no collection {collection!r} in {self._folder.root}: an alias must lead to one")
        aliases = {**self._aliases(), alias: collection}
        target = self._folder.root / self.ALIASES
        temporary = target.with_suffix(".json.tmp")
        with open(temporary, "w") as fh:
            json.dump(aliases, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, target)
        directory = os.open(self._folder.root, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def drop(self, collection: str) -> None:
        for name in (collection, *(collection + suffix for suffix in COMPANION_SUFFIXES)):
            for store in list(self._folder.stores):
                if store.collection == name:
                    store.close()
                    self._folder.stores.remove(store)
            shutil.rmtree(self._folder.root / name, ignore_errors=True)

    def close(self) -> None:
        for store in list(self._folder.stores):
            store.close()
        self._folder.release()


def _record(point: Any) -> Record:
    vector = point.vector
    if vector is not None and not (isinstance(vector, list) and (not vector or isinstance(vector[0], float))):
        vector = None
    return Record(str(point.id), dict(point.payload or {}), floats(vector) if vector else None)


def _optimize_main(directory: str) -> None:
    """Child process of ``build_index_in_background``: optimize the copy and exit."""
    shard = qe.EdgeShard.load(directory)
    shard.optimize()
    shard.flush()
    shard.close()


def shard_config_summary(directory: str) -> dict[str, Any]:
    """The persisted Edge config (for diagnostics and tests)."""
    return dict(json.loads((Path(directory) / "edge_config.json").read_text()))
