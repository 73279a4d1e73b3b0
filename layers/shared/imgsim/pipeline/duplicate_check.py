"""Stage: is a new image a copy, crop, mirror or edit of one already indexed (``imgsim.dedupe``)?

Each embedded image gets its signature (seven embeddings of the grey image: whole, mirror, five crops of 70 %)
and its best match at or above ``IMGSIM_DUPLICATE_THRESHOLD`` (0.79, calibrated on tests/data/duplicate_labels.json:
at most 1 look-alike pair in 30 passes) among the stored signatures and the earlier images of its batch (compared
here with ``one_way_many``: a loop of single comparisons was ~1 ms per image at batches of 100), so the batch's
signatures reach the store in one write. The match is linked to its root — the image the match is itself a
duplicate of, when this one is a duplicate of it too — so a picture makes one group, never a chain.

The record follows the images it names: after a point is replaced or deleted, the images recorded as its
duplicates find their best match again from their stored signatures (``recheck``), and the images named as a
match are marked ``has_duplicates`` (``mark_targets``), every write a compare-and-set on the ETag. Cost per
image (README "Duplicates", tests/bench/dedupe_scale.py): the signature's seven embeddings 6.8 ms against 1.15 ms
for the search vector, its seven searches one batched query (1.8 ms warm at 20,000 images), the batch's
signatures one write (0.5 ms per image): ~9 ms in all.

The check never holds up indexing: with Qdrant failing it, the image goes in without its match (a warning).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..dedupe import DuplicateIndex, Match, Signature, one_way, one_way_many, signatures
from ..duplicates import NOT_DUPLICATES_FIELD, mark_targets
from ..errors import StoreUnavailable
from ..ordering import KeyState
from ..points import DUPLICATE_OF_FIELD, DUPLICATE_SCORE_FIELD
from ..store import FieldIn, StoredPoint, VectorStore, Where, field_unchanged
from .embedding import ImageEmbedder
from .events import Item
from .report import Reporter


class DuplicateCheck:
    """The stage, on one store (its ``<collection>_dedupe`` companion holds the signatures)."""

    def __init__(self, store: VectorStore, embedder: ImageEmbedder, threshold: float, reporter: Reporter) -> None:
        self.store = store
        self.embedder = embedder
        self.threshold = threshold
        self.reporter = reporter
        self.index = DuplicateIndex(store, embedder.dim)

    # -- before the write -------------------------------------------------------------------------------------

    def find(self, good: Sequence[Item], state: KeyState) -> dict[str, Match]:
        """Best existing match at or above the threshold for each image: among the stored signatures, and
        among the earlier images of this batch (compared here, so the batch's signatures go to the store in
        one write at the end)."""
        if not good:
            return {}
        found: dict[str, Match] = {}
        batch: dict[str, Signature] = {}
        try:
            sigs = signatures(self.embedder, [i.image.pixels for i in good if i.image is not None])
            for item, sig in zip(good, sigs, strict=True):
                point_id = item.event.point_id
                prior = state.points.get(point_id, {})
                same = bool(prior.get("etag")) and prior.get("etag") == (item.etag or item.event.etag)
                refused = [str(i) for i in prior.get(NOT_DUPLICATES_FIELD) or []] if same else []
                match = self.index.best_match(point_id, sig, exclude=refused)
                others = [other for other in batch if other != point_id and other not in refused]
                scores = one_way_many(sig, [batch[other] for other in others])
                if len(scores):
                    top = int(np.argmax(scores))
                    if match is None or float(scores[top]) > match.score:
                        match = Match(others[top], float(scores[top]))
                if match is not None and match.score >= self.threshold:
                    found[point_id] = self._to_root(point_id, sig, match, found, refused, batch)
                batch[point_id] = sig
            self.index.add(list(batch.items()))
        except StoreUnavailable as exc:
            # The duplicate check never holds up indexing: the image goes in without its match.
            self.reporter.warning(f"duplicate check skipped for this batch: {exc}")
        return found

    def _to_root(self, point_id: str, sig: Signature, match: Match, found: dict[str, Match],
                 refused: Sequence[str], batch: Mapping[str, Signature]) -> Match:
        """Link to the image the match is itself a duplicate of, when this one is a duplicate of it too
        (checked directly, so no chain): one group per picture instead of a group per copy."""
        if match.point_id in found:
            root: str | None = found[match.point_id].point_id
        else:
            record = self.store.get(match.point_id)
            root = (str(record.payload.get(DUPLICATE_OF_FIELD) or "") or None) if record is not None else None
        if not root or root == point_id or root in refused:
            return match
        stored = (batch[root].full, batch[root].crops) if root in batch else self.index.stored(root)
        if stored is None:
            return match
        score = one_way(sig, *stored)
        return Match(root, score) if score >= self.threshold else match

    # -- after the write --------------------------------------------------------------------------------------

    def written(self, written: Sequence[str], not_written: Sequence[str], matches: Mapping[str, Match],
                state: KeyState) -> int:
        """Bookkeeping once the batch is written; returns how many written images were recorded as duplicates."""
        try:
            if not_written:  # their signatures went in before the write: take them out again
                self.index.remove(not_written)
            mark_targets(self.store, [m.point_id for point_id, m in matches.items() if point_id in written])
            # Images that named a replaced image as their match: their best match may have changed. Only replaced
            # ones: a new image's only dependents are the later images of its batch, matched just now with their
            # whole signature (a re-check from stored signatures, which keep no mirror, would drop a mirror's match).
            self.recheck([point_id for point_id in written if point_id in state.points])
        except StoreUnavailable as exc:
            self.reporter.warning(f"duplicate bookkeeping after the write failed: {exc}")
        return sum(1 for point_id in written if point_id in matches)

    def removed(self, point_ids: Sequence[str]) -> None:
        """Bookkeeping once images are deleted: their signatures go, their duplicates look again."""
        if not point_ids:
            return
        try:
            self.index.remove(point_ids)
            self.recheck(point_ids, gone=True)
        except StoreUnavailable as exc:
            self.reporter.warning(f"duplicate bookkeeping after a delete failed: {exc}")

    def recheck(self, point_ids: Sequence[str], *, gone: bool = False) -> None:
        """Points recorded as duplicates of ``point_ids`` (now replaced, or ``gone``): find their best match
        again from their stored signatures, and rewrite the record only if that point is unchanged since."""
        if not point_ids:
            return
        dependents = self.store.scroll(where=Where(must=(FieldIn(DUPLICATE_OF_FIELD, tuple(point_ids)),)),
                                       limit=1000, with_vectors=True)[0]
        exclude = tuple(point_ids) if gone else ()
        targets: list[str] = []
        for record in dependents:
            stored = self.index.stored(record.id)
            payload = dict(record.payload)
            payload.pop(DUPLICATE_OF_FIELD, None)
            payload.pop(DUPLICATE_SCORE_FIELD, None)
            if stored is not None:
                whole, crops = stored
                # The mirror of a stored image is not kept: its whole stands in (mirrored pairs still meet
                # through the other side's mirror when that one arrives).
                refused = [str(i) for i in record.payload.get(NOT_DUPLICATES_FIELD) or []]
                match = self.index.best_match(record.id, Signature(whole, whole, crops), exclude=(*exclude, *refused))
                if match is not None and match.score >= self.threshold:
                    payload.update({DUPLICATE_OF_FIELD: match.point_id, DUPLICATE_SCORE_FIELD: round(match.score, 4)})
                    targets.append(match.point_id)
            if record.vector is None:
                continue
            unchanged = field_unchanged("etag", {record.id: record.payload.get("etag")})
            self.store.upsert([StoredPoint(record.id, record.vector, payload)], only_if=unchanged)
        mark_targets(self.store, targets)


__all__ = ["DuplicateCheck"]
