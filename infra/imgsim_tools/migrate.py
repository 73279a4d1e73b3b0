"""Copy a collection (and its tombstones) between stores: ``imgsim migrate --to URL`` / ``--from URL``.

Scroll the source in id order, upsert each page into the target. Idempotent (same
point ids, so a second run rewrites the same points) and resumable: after each page
is stored, the next scroll offset is written to a checkpoint file, so a run that
stops (Ctrl-C, network) continues from the last stored page. The tombstones
collection is copied too, so the ordering protocol keeps working on the target.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imgsim.ordering import TOMBSTONE_SUFFIX
from imgsim.store import StoredPoint, VectorStore

DEFAULT_PAGE = 256


@dataclass
class MigrationSummary:
    copied: int = 0
    tombstones: int = 0
    resumed_from: str | None = None
    source_count: int = 0
    target_count: int = 0

    def line(self) -> str:
        resumed = f" (resumed at {self.resumed_from})" if self.resumed_from else ""
        return (f"copied {self.copied} points and {self.tombstones} tombstones{resumed}; "
                f"source has {self.source_count}, target has {self.target_count}")


def checkpoint_path(folder: Path, source: VectorStore, target: VectorStore) -> Path:
    ident = hashlib.sha256(f"{source.describe()}|{source.collection}|{target.describe()}|{target.collection}".encode())
    return folder / f"migrate-{ident.hexdigest()[:16]}.json"


def copy_points(
    source: VectorStore,
    target: VectorStore,
    *,
    page: int = DEFAULT_PAGE,
    checkpoint: Path | None = None,
    on_page: Callable[[int], None] | None = None,
) -> tuple[int, str | None]:
    """Copy every point of ``source`` into ``target``; returns (points copied, offset resumed from)."""
    offset: str | None = None
    resumed: str | None = None
    if checkpoint is not None and checkpoint.exists():
        offset = resumed = json.loads(checkpoint.read_text()).get("offset")
    copied = 0
    while True:
        records, next_offset = source.scroll(limit=page, offset=offset, with_vectors=True)
        points = [StoredPoint(r.id, r.vector or [], r.payload) for r in records if r.vector]
        target.upsert(points)
        copied += len(points)
        if on_page:
            on_page(len(records))
        if next_offset is None:
            break
        offset = next_offset
        if checkpoint is not None:
            tmp = checkpoint.with_suffix(".tmp")
            tmp.write_text(json.dumps({"offset": offset}))
            os.replace(tmp, checkpoint)
    return copied, resumed


def migrate(
    source: VectorStore,
    target: VectorStore,
    *,
    page: int = DEFAULT_PAGE,
    checkpoint_dir: Path | None = None,
    on_page: Callable[[int], None] | None = None,
) -> MigrationSummary:
    summary = MigrationSummary(source_count=source.count())
    target.ensure_collection()  # a mismatched target fails before anything is copied
    checkpoint = checkpoint_path(checkpoint_dir, source, target) if checkpoint_dir else None
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    summary.copied, summary.resumed_from = copy_points(
        source, target, page=page, checkpoint=checkpoint, on_page=on_page
    )
    # Companions belong to their stores (closed with them).
    summary.tombstones, _ = copy_points(
        source.companion(TOMBSTONE_SUFFIX, dim=1), target.companion(TOMBSTONE_SUFFIX, dim=1), page=page
    )
    if checkpoint is not None and checkpoint.exists():
        checkpoint.unlink()
    summary.target_count = target.count()
    return summary
