"""Duplicate links: which indexed images are copies, crops, mirrors or edits of each other.

Each image's duplicate signature (``imgsim.signature``) is stored in its own point (``sig``). Once an image is
written, the indexer looks for its duplicates: the nearest images by the ordinary search vector (``CANDIDATES``
of them at a raw cosine of at least ``CANDIDATE_MIN_SCORE``: 99.85 % of labelled and transformed duplicate pairs,
either arrival order, see ``imgsim.signature``) are scored with the symmetric pair score (the colour cosine the
search returned, or the signatures' grey similarity), and those at or above the threshold are written to the image's point as its **links** (``dup_links``, with each partner's score and ETag).

Why it gives the same answer in any order:

- the score is symmetric, so a pair is a duplicate or not whichever arrived first;
- each image writes only its own links, after its own point is written (*store, then look*): of two images
  indexed at the same moment by two invocations, at least the later look sees the other, so the pair is
  linked whatever the concurrency and batching;
- a link holds the partner's ETag when it was scored, and counts only while the partner is live with that
  ETag: a replaced image's old links lapse by themselves (the new version links afresh), a deleted one's
  vanish from the groups, and a restored one's come back, with no write to any other point;
- reading takes the union of both directions (an image's links, and the links that name it).

Groups are computed from the links when read (``imgsim.duplicates``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import signature
from .store import (
    TENANT_FIELD,
    FieldIn,
    IdIn,
    Record,
    SearchHit,
    VectorStore,
    Where,
    field_unchanged,
    tenant_is,
)

SIG_FIELD = "sig"
LINKS_FIELD = "dup_links"  # keyword list, indexed: "which images link to X" is one filtered scroll
LINK_SCORES_FIELD = "dup_scores"  # {partner id: pair score}
LINK_ETAGS_FIELD = "dup_etags"  # {partner id: the partner's ETag when scored}
NOT_DUPLICATES_FIELD = "not_duplicates"  # decisions "these two are not duplicates", kept on both images
LINK_FIELDS = (LINKS_FIELD, LINK_SCORES_FIELD, LINK_ETAGS_FIELD)
# What the duplicate check reads of a candidate (payloads come from disk: only these).
CANDIDATE_FIELDS = (SIG_FIELD, "etag", NOT_DUPLICATES_FIELD)
# Payload fields that are bookkeeping, not information about the image (left out of API answers).
INTERNAL_FIELDS = (SIG_FIELD, *LINK_FIELDS, "dirs")
DEFAULT_DUPLICATE_THRESHOLD = signature.DEFAULT_DUPLICATE_THRESHOLD


@dataclass(frozen=True)
class Subject:
    """An image just written: looks for its duplicates among everything stored of its tenant (its own batch
    included)."""

    point_id: str
    vector: Sequence[float]
    sig: signature.Signature
    etag: str | None
    refused: frozenset[str] = field(default_factory=frozenset)  # "not duplicates" decisions it carries
    tenant: str | None = None  # only images of the same tenant (or, for None, of no tenant) are its duplicates

    @classmethod
    def of(cls, point_id: str, vector: Sequence[float], sig: signature.Signature,
           payload: Mapping[str, Any]) -> Subject:
        """A stored (or just written) image as a subject, from its payload."""
        return cls(point_id, vector, sig, payload.get("etag"), frozenset(not_duplicates(payload)),
                   payload.get(TENANT_FIELD) or None)


@dataclass(frozen=True)
class Link:
    partner: str
    score: float
    etag: str | None


def not_duplicates(payload: Mapping[str, Any]) -> set[str]:
    return {str(i) for i in payload.get(NOT_DUPLICATES_FIELD) or []}


def stored_links(record: Record) -> list[Link]:
    """The links an image wrote (not yet checked against the partners' current state)."""
    scores = record.payload.get(LINK_SCORES_FIELD) or {}
    etags = record.payload.get(LINK_ETAGS_FIELD) or {}
    return [Link(str(p), float(scores.get(p, 0.0)), etags.get(p)) for p in record.payload.get(LINKS_FIELD) or []]


def link_holds(link: Link, partner: Record | None) -> bool:
    """A link counts while its partner is live with the content it was scored against."""
    return partner is not None and (partner.payload.get("etag") or None) == (link.etag or None)


class DuplicateLinks:
    """Finding and writing one store's duplicate links (the indexer's side)."""

    def __init__(self, store: VectorStore, threshold: float, *, candidates: int = signature.CANDIDATES,
                 min_score: float = signature.CANDIDATE_MIN_SCORE) -> None:
        self.store = store
        self.threshold = threshold
        self.candidates = candidates
        self.min_score = min_score

    def find(self, subjects: Sequence[Subject]) -> dict[str, list[Link]]:
        """Each subject's duplicates among the stored images: one batched search by the search vectors, then the
        exact signature score of each candidate."""
        if not subjects:
            return {}
        # Within the subject's tenant, in the engine: candidates from other tenants would take the places of its own.
        requests = [(s.vector, self.candidates + 1, Where(must=(tenant_is(s.tenant),), must_not=(IdIn((s.point_id,)),)))
                    for s in subjects]
        found: dict[str, list[Link]] = {}
        hits_of = self.store.search_batch(requests, min_score=self.min_score, fields=CANDIDATE_FIELDS)
        for subject, hits in zip(subjects, hits_of, strict=True):
            links = self._score(subject, [h for h in hits if h.score >= self.min_score and h.id != subject.point_id])
            if links:
                found[subject.point_id] = links
        return found

    def _score(self, subject: Subject, hits: Sequence[SearchHit]) -> list[Link]:
        allowed = [hit for hit in hits[: self.candidates]
                   if hit.id not in subject.refused and subject.point_id not in not_duplicates(hit.payload)]
        usable = [(hit, sig) for hit, sig in zip(allowed, signature.decode_many(
            [hit.payload.get(SIG_FIELD) for hit in allowed]), strict=True) if sig is not None]
        if not usable:
            return []
        # The colour cosine is the hit's score as the store computed it: the same two stored float vectors whichever
        # image asks, so the pair scores the same both ways. Rounded to 4 places with the link's score.
        scores = signature.score_many(subject.sig, [sig for _, sig in usable], [hit.score for hit, _ in usable])
        links = [Link(hit.id, round(float(score), 4), hit.payload.get("etag"))
                 for (hit, _), score in zip(usable, scores, strict=True) if score >= self.threshold]
        return sorted(links, key=lambda link: link.partner)

    def link(self, subjects: Sequence[Subject]) -> dict[str, list[Link]]:
        """Find and write each subject's links (only onto the point as the subject wrote it: the ETag is the
        condition, and a point deleted meanwhile is not created again). Returns the links found."""
        found = self.find(subjects)
        for subject in subjects:
            links = found.get(subject.point_id)
            if links:
                self.store.set_fields(field_unchanged("etag", {subject.point_id: subject.etag}), link_fields(links))
        return found

    def relink(self, records: Iterable[Record]) -> dict[str, list[Link]]:
        """Look again for these stored images' duplicates (a restored image; ``imgsim backfill``): from their
        stored vectors and signatures, links rewritten (emptied when none)."""
        subjects = []
        for record in records:
            sig = signature.decode(record.payload.get(SIG_FIELD))
            if sig is None or record.vector is None:
                continue
            subjects.append(Subject.of(record.id, record.vector, sig, record.payload))
        found = self.find(subjects)
        for subject in subjects:
            self.store.set_fields(field_unchanged("etag", {subject.point_id: subject.etag}),
                                  link_fields(found.get(subject.point_id, [])))
        return found


def link_fields(links: Sequence[Link]) -> dict[str, Any]:
    return {
        LINKS_FIELD: [link.partner for link in links],
        LINK_SCORES_FIELD: {link.partner: link.score for link in links},
        LINK_ETAGS_FIELD: {link.partner: link.etag for link in links},
    }


def linking_to(store: VectorStore, ids: Sequence[str], *, limit: int = 1000) -> list[Record]:
    """The images whose links name any of ``ids`` (an indexed filter)."""
    if not ids:
        return []
    return store.scroll(where=Where(must=(FieldIn(LINKS_FIELD, tuple(ids)),)), limit=limit)[0]


def pair_score(a: Record, b: Record) -> float | None:
    """The pair score of two stored images from their signatures and search vectors (records read with their
    vectors); None when one has no signature or no vector."""
    sa, sb = signature.decode(a.payload.get(SIG_FIELD)), signature.decode(b.payload.get(SIG_FIELD))
    if sa is None or sb is None or a.vector is None or b.vector is None:
        return None
    cosine = float(np.dot(np.asarray(a.vector, dtype=np.float32), np.asarray(b.vector, dtype=np.float32)))
    return signature.score(sa, sb, max(0.0, cosine))


__all__ = [
    "DEFAULT_DUPLICATE_THRESHOLD", "INTERNAL_FIELDS", "LINKS_FIELD", "LINK_ETAGS_FIELD", "LINK_FIELDS",
    "LINK_SCORES_FIELD", "NOT_DUPLICATES_FIELD", "SIG_FIELD", "DuplicateLinks", "Link", "Subject", "link_fields",
    "link_holds", "linking_to", "not_duplicates", "pair_score", "stored_links",
]
