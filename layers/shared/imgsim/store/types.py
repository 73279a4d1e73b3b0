"""imgsim's own store types: points, records, hits and filters.

Every backend translates these to its engine's types and back, so no
REST document or ``qdrant_edge`` object is ever seen outside
``imgsim.store.server`` / ``imgsim.store.edge``. The filter algebra is the
small part of Qdrant's that imgsim uses: field equality, any-of, "field not
set", point ids, and must / should / must_not nesting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

F_co = TypeVar("F_co", covariant=True)

# Payload fields with a keyword index: exact-key lookups and "folder" prefix filters, and the duplicate links
# (``dup_links``: "which images link to X", read when groups are listed). Created with a collection, and added
# when an older collection is opened (measured: listing 1,827 groups of 20,000 images took 41.9 s without an
# index on the duplicate records).
# ``tenant`` (imgsim.tenants): whose image a point is; indexed as Qdrant's multitenancy guide says (a keyword index
# with ``is_tenant``: the engine keeps each tenant's points together on disk and plans a tenant's filtered search
# as a search of that tenant).
KEY_FIELD = "key"
DIRS_FIELD = "dirs"
BUCKET_FIELD = "bucket"
TENANT_FIELD = "tenant"
INDEXED_FIELDS = (KEY_FIELD, DIRS_FIELD, "dup_links", TENANT_FIELD)
TENANT_INDEXED = frozenset({TENANT_FIELD})  # of INDEXED_FIELDS, those whose keyword index says is_tenant


def key_dirs(key: str) -> list[str]:
    """Every folder prefix of a key: ``a/b/c.jpg`` -> ``["a/", "a/b/"]``.

    Stored in the payload so a prefix filter on whole folders is an indexed
    keyword match on every backend (Qdrant servers before 1.16 have no
    keyword-prefix match).
    """
    parts = key.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


@dataclass(frozen=True)
class PayloadIndex:
    """One payload index as the engine reports it: its kind ("keyword") and whether it is a tenant index."""

    kind: str
    is_tenant: bool = False


@dataclass(frozen=True)
class StoredPoint:
    id: str
    vector: Sequence[float]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Record:
    """A point read back: ``vector`` only when asked for."""

    id: str
    payload: dict[str, Any]
    vector: list[float] | None = None


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float  # max(0, cosine), in [0, 1]
    percent: float
    payload: dict[str, Any]


# -- filters -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldEquals:
    """A keyword or integer field holds ``value`` (no booleans: Qdrant Edge 0.9 never matches one; store 0/1)."""

    field: str
    value: str | int


@dataclass(frozen=True)
class FieldIn:
    field: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class FieldMissing:
    """The field is absent, null or an empty list (Qdrant's ``is_empty``)."""

    field: str


@dataclass(frozen=True)
class FieldRange:
    """``gte <= field <= lte`` (either bound may be None). ``datetime``: the values are RFC 3339 strings
    (``indexed_at``), compared as instants."""

    field: str
    gte: float | str | None = None
    lte: float | str | None = None
    datetime: bool = False


@dataclass(frozen=True)
class IdIn:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Where:
    """All of ``must``, at least one of ``should`` (when given), none of ``must_not``."""

    must: tuple[Condition, ...] = field(default_factory=tuple)
    should: tuple[Condition, ...] = field(default_factory=tuple)
    must_not: tuple[Condition, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.must or self.should or self.must_not)


Condition = FieldEquals | FieldIn | FieldMissing | FieldRange | IdIn | Where


def where_all(*conditions: Condition | None) -> Where | None:
    kept = tuple(c for c in conditions if c is not None and not (isinstance(c, Where) and not c))
    return Where(must=kept) if kept else None


def key_is(key: str, bucket: str | None = None) -> Where:
    must: list[Condition] = [FieldEquals(KEY_FIELD, key)]
    if bucket is not None:
        must.append(FieldEquals(BUCKET_FIELD, bucket))
    return Where(must=tuple(must))


def tenant_is(tenant: str | None) -> Condition:
    """The points of ``tenant``; None: the points of no tenant (the field is not set)."""
    return FieldEquals(TENANT_FIELD, tenant) if tenant is not None else FieldMissing(TENANT_FIELD)


def in_bucket(bucket: str) -> Where:
    return Where(must=(FieldEquals(BUCKET_FIELD, bucket),))


def ids_in(ids: Iterable[str]) -> IdIn:
    return IdIn(tuple(str(i) for i in ids))


def field_unchanged(field_name: str, expected: Mapping[str, str | None]) -> Where:
    """Points that still carry, per id, the value read earlier (None: the field is not set).

    Used as the condition of an upsert or delete this is a compare-and-set: a
    write made by someone else in between is never overwritten blindly.
    """
    per_id: list[Condition] = []
    for point_id, value in expected.items():
        same: Condition = FieldEquals(field_name, value) if value else FieldMissing(field_name)
        per_id.append(Where(must=(IdIn((point_id,)), same)))
    return Where(should=tuple(per_id))


class FilterBuilder(Protocol[F_co]):
    """An engine's filter constructors; ``translate`` walks imgsim's filter with them."""

    def combine(self, must: list[Any], should: list[Any], must_not: list[Any]) -> F_co: ...

    def equals(self, field: str, value: str | int | bool) -> Any: ...

    def any_of(self, field: str, values: list[str]) -> Any: ...

    def missing(self, field: str) -> Any: ...

    def has_ids(self, ids: list[str]) -> Any: ...

    def range(self, field: str, gte: float | str | None, lte: float | str | None, datetime: bool) -> Any: ...


def translate(where: Where | None, builder: FilterBuilder[F_co]) -> F_co | None:
    """imgsim's filter in an engine's types (None: no filter), written once for every backend."""
    if where is None or not where:
        return None

    def condition(c: Condition) -> Any:
        if isinstance(c, FieldEquals):
            return builder.equals(c.field, c.value)
        if isinstance(c, FieldIn):
            return builder.any_of(c.field, list(c.values))
        if isinstance(c, FieldMissing):
            return builder.missing(c.field)
        if isinstance(c, IdIn):
            return builder.has_ids(list(c.ids))
        if isinstance(c, FieldRange):
            return builder.range(c.field, c.gte, c.lte, c.datetime)
        if isinstance(c, Where):
            return translate(c, builder) or builder.combine([], [], [])
        raise TypeError(f"not a filter condition: {c!r}")

    return builder.combine(
        [condition(c) for c in where.must], [condition(c) for c in where.should], [condition(c) for c in where.must_not]
    )
