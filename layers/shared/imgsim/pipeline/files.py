"""Source: local image files (``imgsim index PATHS``), turned into the same object events as S3 uploads.

A file's event is a put of its absolute, normalized path (the key, and the point id ``point_id_for_file``), with
no bucket and no sequencer; ``message_id`` keeps the path as it was named, so messages about it read as the user
typed it. Its ETag is the MD5 of its bytes, computed at the fetch like S3's for a single-part upload: the
duplicate check then keeps "not duplicates" decisions across re-indexing an unchanged file, exactly as for an
object (``imgsim.duplicates``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .events import FILE, PUT, ObjectEvent


def file_event(path: str | os.PathLike[str]) -> ObjectEvent:
    """A put of one local file."""
    named = os.fspath(path)
    return ObjectEvent(message_id=named, action=PUT, bucket=None, key=os.path.abspath(named),
                       event_name="ObjectCreated:File", origin=FILE)


def file_events(paths: Iterable[str | os.PathLike[str]]) -> list[ObjectEvent]:
    return [file_event(path) for path in paths]


__all__ = ["file_event", "file_events"]
