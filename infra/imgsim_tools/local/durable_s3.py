"""Durable S3 for the local stack: what moto acknowledges is on disk first, and a restart reads no object.

moto keeps S3 in memory. ``WriteThrough`` makes every write and delete it acknowledges durable before the
response (447 of 500 acknowledged uploads were lost to ``kill -9`` when objects were mirrored after the
fact). ``DurableBucket`` is where they go: one file per object version under ``objects/`` and one SQLite
database (``bucket.sqlite``, WAL, ``synchronous=FULL``) holding the listing (key, ETag, size, Content-Type,
Last-Modified) and the *pending* notifications: a write or delete whose event IndexFunction has not handled
yet. On start moto's bucket gets a key store backed by that listing (``LazyKeyStore``): a key is made when
first asked for, its bytes read from disk when first read (``StoredKey``), and only the pending events are
sent again, so a restart costs the same whether the bucket holds a hundred objects or a million (measured:
docs/development.md "The local stack"), with no scan of the bucket and no comparison against the index.

Hand-written because moto has no persistence; the moto internals it relies on (``S3Backend.put_object`` /
``delete_object``, ``FakeKey.set_metadata``, ``FakeKey._value_buffer``) are pinned by the kill -9 tests in
tests/test_local_stack.py and tests/test_durable_s3.py.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.s3.models import FakeKey
from moto.s3.utils import _VersionedKeyStore
from moto.utilities.utils import LowercaseDict

from .common import log

PUT, DELETE = "put", "delete"


class StoredKey(FakeKey):
    """A moto key whose bytes stay on disk until something reads them (GET, copy, the indexer).

    Built without ``FakeKey.__init__``: moto's constructor costs ~60 µs a key (a buffer, an ACL, a metadata
    dict each), and restoring 100,000 keys must fit in the 3 s start-up budget. Attributes every key shares
    are class attributes (copied once from a real FakeKey); each key sets six, and its metadata dict and
    buffer are made on first use (measured: 100,000 keys restored in ~0.4 s, see docs/development.md "The local stack").
    """

    # moto's model registry files classes under the second part of their module name.
    __module__ = "moto.s3.imgsim_stored_key"
    _disk_dir = ""
    _disk_file = ""
    _content_type = "binary/octet-stream"

    @property  # type: ignore[override]
    def _value_buffer(self) -> Any:
        buffer = self.__dict__.get("_buffer")
        if buffer is None:
            buffer = tempfile.SpooledTemporaryFile(self._max_buffer_size)  # noqa: SIM115 - the key's buffer, as moto's
            if self._disk_file:
                with open(os.path.join(self._disk_dir, self._disk_file), "rb") as fh:
                    buffer.write(fh.read())
            self.__dict__["_buffer"] = buffer
        return buffer

    @_value_buffer.setter
    def _value_buffer(self, buffer: Any) -> None:
        self.__dict__["_buffer"] = buffer

    @property  # type: ignore[override]
    def _metadata(self) -> Any:
        metadata = self.__dict__.get("_meta")
        if metadata is None:
            metadata = LowercaseDict()
            metadata["Content-Type"] = self._content_type
            self.__dict__["_meta"] = metadata
        return metadata

    @_metadata.setter
    def _metadata(self, metadata: Any) -> None:
        self.__dict__["_meta"] = metadata

    def dispose(self, garbage: bool = False) -> None:
        if "_buffer" not in self.__dict__:  # never read: nothing to close (and no reason to read it now)
            self.disposed = True
            return
        super().dispose(garbage)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["value"] = self.value
        state["_metadata"] = self._metadata
        for name in ("_buffer", "_meta", "lock"):
            state.pop(name, None)
        return state


_PER_KEY = {"_buffer", "_meta", "_metadata", "lock", "name", "_etag", "contentsize", "last_modified", "disposed"}
_shared_ready = False


def _stored_key(name: str, folder: str, file: str, etag: str, size: int, content_type: str | None,
                modified: float) -> StoredKey:
    key = object.__new__(StoredKey)  # not BaseModel.__new__: moto's instance tracking is for its own reset
    key.__dict__.update(name=name, _etag=etag, contentsize=size, _disk_dir=folder, _disk_file=file,
                        last_modified=_utc(modified), lock=threading.Lock(), disposed=False)
    if content_type:
        key._content_type = content_type
    return key


def _share_defaults(bucket: str, account_id: str, region: str) -> None:
    """Copy what every key of this bucket has in common from a real FakeKey onto the class, once."""
    global _shared_ready
    if _shared_ready:
        return
    proto = StoredKey("prototype", b"", account_id, region, bucket_name=bucket)
    for attribute, value in proto.__dict__.items():
        if attribute not in _PER_KEY:
            setattr(StoredKey, attribute, value)
    proto.dispose()
    _shared_ready = True


def _utc(timestamp: float) -> datetime.datetime:
    # moto keeps naive UTC datetimes.
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Pending:
    """A write or delete whose notification has not been handled by IndexFunction yet."""

    key: str
    action: str  # PUT or DELETE
    etag: str | None
    size: int | None


class DurableBucket:
    """One bucket's objects and listing on disk, and the notifications still owed to the event source."""

    def __init__(self, root: Path, bucket: str) -> None:
        self.root = root
        self.bucket = bucket
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        fresh = not (root / "bucket.sqlite").exists()
        self._db = sqlite3.connect(root / "bucket.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, file TEXT NOT NULL, etag TEXT NOT NULL,"
            " size INTEGER NOT NULL, content_type TEXT, modified REAL NOT NULL);"
            "CREATE TABLE IF NOT EXISTS pending (key TEXT PRIMARY KEY, action TEXT NOT NULL, etag TEXT, size INTEGER);"
        )
        self._db_lock = threading.Lock()
        self._key_locks = [threading.RLock() for _ in range(64)]
        if fresh:
            self._import_legacy_mirror()

    def close(self) -> None:
        with self._db_lock:
            self._db.close()

    @contextmanager
    def key_lock(self, key: str) -> Iterator[None]:
        """Held across moto's write and the durable one, and by ``settle``: a notification handled before
        its write was recorded cannot leave a pending row behind (or clear a newer one)."""
        with self._key_locks[hash(key) % len(self._key_locks)]:
            yield

    def _file_name(self, key: str, etag: str) -> str:
        # Hashed: keys may hold any character, ``..`` or exceed file name limits. One file per version, so a
        # crash between writing the bytes and committing the listing never leaves the old listing on new bytes.
        return f"{hashlib.sha256(key.encode('utf-8')).hexdigest()[:40]}-{etag}.bin"

    def _transaction(self, statements: list[tuple[str, tuple]]) -> None:
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _current_file(self, key: str) -> str | None:
        with self._db_lock:
            row = self._db.execute("SELECT file FROM objects WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # -- writes (called with key_lock held, inside moto's request, before its response) ------------------------

    def write(self, key: str, data: bytes, etag: str, content_type: str | None, modified: float) -> None:
        etag = etag.strip('"')
        name = self._file_name(key, etag)
        previous = self._current_file(key)
        path = self.objects / name
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.objects)
        self._transaction([
            ("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?)",
             (key, name, etag, len(data), content_type, modified)),
            ("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)", (key, PUT, etag, len(data))),
        ])
        if previous and previous != name:
            (self.objects / previous).unlink(missing_ok=True)

    def set_content_type(self, key: str, content_type: str | None) -> None:
        self._transaction([("UPDATE objects SET content_type = ? WHERE key = ?", (content_type, key))])

    def remove(self, key: str) -> None:
        previous = self._current_file(key)
        self._transaction([
            ("DELETE FROM objects WHERE key = ?", (key,)),
            ("INSERT OR REPLACE INTO pending VALUES (?, ?, NULL, NULL)", (key, DELETE)),
        ])
        if previous:
            (self.objects / previous).unlink(missing_ok=True)

    def settle(self, key: str, action: str, etag: str | None) -> None:
        """IndexFunction handled the event for this write or delete: it is no longer owed. Only the
        matching row goes (a newer write of the key stays pending until its own event is handled)."""
        with self.key_lock(key):
            if action == PUT:
                self._transaction([("DELETE FROM pending WHERE key = ? AND action = ? AND etag = ?",
                                    (key, PUT, (etag or "").strip('"')))])
            else:
                self._transaction([("DELETE FROM pending WHERE key = ? AND action = ?", (key, DELETE))])

    # -- start-up -------------------------------------------------------------------------------------------------

    def restore_into(self, backend: Any, account_id: str, region: str) -> int:
        """Give moto's bucket a key store backed by this listing (no notification: these objects are indexed
        or pending). Nothing is read now: a key is made when first asked for, all of them when first listed."""
        bucket = backend.get_bucket(self.bucket)
        _share_defaults(self.bucket, account_id, region)
        if len(bucket.keys):
            raise RuntimeError(f"bucket {self.bucket} already holds keys: restore into an empty one")
        bucket.keys = LazyKeyStore(self)
        return self.count()

    def stored_key(self, key: str) -> StoredKey | None:
        with self._db_lock:
            row = self._db.execute("SELECT key, file, etag, size, content_type, modified FROM objects WHERE key = ?",
                                   (key,)).fetchone()
        return _stored_key(row[0], str(self.objects), *row[1:]) if row else None

    def stored_keys(self) -> Iterator[StoredKey]:
        with self._db_lock:
            rows = self._db.execute("SELECT key, file, etag, size, content_type, modified FROM objects").fetchall()
        folder = str(self.objects)
        for row in rows:
            yield _stored_key(row[0], folder, *row[1:])

    def all_key_locks(self) -> list[threading.RLock]:
        return self._key_locks

    def pending(self) -> list[Pending]:
        with self._db_lock:
            rows = self._db.execute("SELECT key, action, etag, size FROM pending ORDER BY rowid").fetchall()
        return [Pending(*row) for row in rows]

    def count(self) -> int:
        with self._db_lock:
            return int(self._db.execute("SELECT COUNT(*) FROM objects").fetchone()[0])

    def _import_legacy_mirror(self) -> None:
        """Data dirs written before this layout: ``<sha>.bin`` + ``<sha>.json`` beside ``objects/``. Imported
        once, each marked pending (the indexer skips those whose point already has the same ETag)."""
        metas = sorted(self.root.glob("*.json"))
        if not metas:
            return
        for meta_path in metas:
            try:
                meta = json.loads(meta_path.read_text("utf-8"))
                data_path = meta_path.with_suffix(".bin")
                etag = str(meta.get("etag") or "").strip('"')
                name = self._file_name(meta["key"], etag)
                size = data_path.stat().st_size
                os.replace(data_path, self.objects / name)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("not importing %s: %s", meta_path, exc)
                continue
            self._transaction([
                ("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?)",
                 (meta["key"], name, etag, size, meta.get("content_type"), meta_path.stat().st_mtime)),
                ("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)", (meta["key"], PUT, etag, size)),
            ])
            meta_path.unlink()
        log.info("imported %d stored images from the previous data dir layout", len(metas))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LazyKeyStore(_VersionedKeyStore):
    """moto's key store for a restored bucket: a key not yet in memory is looked up in the durable listing
    when moto asks for it; anything that walks the whole bucket (a listing, a count) first brings every key
    in, once (~0.9 s per 100,000 keys). So a restart costs the same at any bucket size.

    A lookup takes the key's lock, which moto's write and the durable one hold together (``WriteThrough``):
    a key being deleted is never brought back from a listing row about to go.
    """

    def __init__(self, durable: DurableBucket) -> None:
        super().__init__()
        self._durable = durable
        self._complete = False
        self._all_lock = threading.Lock()

    def _load(self, key: str) -> None:
        if self._complete or dict.__contains__(self, key):
            return
        with self._durable.key_lock(key):
            if not dict.__contains__(self, key):
                stored = self._durable.stored_key(key)
                if stored is not None:
                    dict.__setitem__(self, key, [stored])  # one version per key, as moto keeps them

    def _load_all(self) -> None:
        if self._complete:
            return
        with self._all_lock:
            if self._complete:
                return
            locks = self._durable.all_key_locks()
            for lock in locks:  # always in this order; writers hold one at a time and never list
                lock.acquire()
            try:
                for stored in self._durable.stored_keys():
                    if not dict.__contains__(self, stored.name):
                        dict.__setitem__(self, stored.name, [stored])
                self._complete = True
            finally:
                for lock in reversed(locks):
                    lock.release()

    def __sgetitem__(self, key: str) -> list[Any]:
        self._load(key)
        return super().__sgetitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self._load(key)
        return dict.__contains__(self, key)

    def __len__(self) -> int:
        self._load_all()
        return dict.__len__(self)

    def __iter__(self) -> Iterator[str]:
        self._load_all()
        return dict.__iter__(self)

    def keys(self) -> Any:
        self._load_all()
        return dict.keys(self)

    def _self_iterable(self) -> dict[str, Any]:
        self._load_all()
        return super()._self_iterable()


class WriteThrough:
    """Every S3 write or delete that moto acknowledges is on disk first.

    moto funnels every write through ``S3Backend.put_object`` (PUT, copy, multipart completion) and every
    removal through ``S3Backend.delete_object`` (DELETE, DeleteObjects), and sets a new key's Content-Type
    with ``FakeKey.set_metadata``, all inside the request, before the response: wrapping those three makes
    the acknowledgement come after the commit.
    """

    def __init__(self, durable: DurableBucket) -> None:
        self.durable = durable
        self._saved: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        from moto.s3.models import S3Backend

        durable, bucket = self.durable, self.durable.bucket
        real_put, real_delete, real_meta = S3Backend.put_object, S3Backend.delete_object, FakeKey.set_metadata

        def put_object(backend: Any, bucket_name: str, key_name: str, value: bytes, *args: Any, **kwargs: Any) -> Any:
            if bucket_name != bucket:
                return real_put(backend, bucket_name, key_name, value, *args, **kwargs)
            with durable.key_lock(key_name):
                key = real_put(backend, bucket_name, key_name, value, *args, **kwargs)
                modified = key.last_modified.replace(tzinfo=datetime.UTC).timestamp()
                durable.write(key_name, key.value, key.etag, key.metadata.get("Content-Type"), modified)
            return key

        def delete_object(backend: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
            if bucket_name != bucket:
                return real_delete(backend, bucket_name, key_name, *args, **kwargs)
            with durable.key_lock(key_name):
                result = real_delete(backend, bucket_name, key_name, *args, **kwargs)
                if result and result[0]:
                    durable.remove(key_name)
            return result

        def set_metadata(key: Any, metadata: Any, *args: Any, **kwargs: Any) -> None:
            real_meta(key, metadata, *args, **kwargs)
            if getattr(key, "bucket_name", None) == bucket and "Content-Type" in key.metadata:
                durable.set_content_type(key.name, key.metadata.get("Content-Type"))

        self._saved = [(S3Backend, "put_object", real_put), (S3Backend, "delete_object", real_delete),
                       (FakeKey, "set_metadata", real_meta)]
        S3Backend.put_object = put_object  # type: ignore[method-assign]
        S3Backend.delete_object = delete_object  # type: ignore[method-assign]
        FakeKey.set_metadata = set_metadata  # type: ignore[method-assign]

    def uninstall(self) -> None:
        for owner, name, original in self._saved:
            setattr(owner, name, original)
        self._saved = []
