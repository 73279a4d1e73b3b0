"""Tenant isolation in one place: a store that shows one tenant's points only (``TenantView``).

The API's services read and write through ``scoped(store, visibility)``, so every lookup, search, scroll, count,
delete and field update they make is limited to the caller's tenant by the engine's own filter (the ``tenant``
payload field, indexed with ``is_tenant``): no service method, present or future, has to remember a filter. What
another tenant owns is simply not there: a lookup of its id finds nothing, exactly as for an id nobody has.

Three visibilities:

- a tenant name: that tenant's points (payload ``tenant`` equal to it);
- ``None``: the points of no tenant (no ``tenant`` field): the API keys without a tenant and the legacy
  ``IMGSIM_API_KEY``, so a single-tenant deployment from before tenants sees what it always saw;
- ``ALL_TENANTS``: everything, unwrapped. For operators working on the store directly (the CLI's local commands,
  backfill, reindex, migrate, emptying the trash, the trash's lifecycle) and never for a request: it is a value of
  its own, so a caller without a tenant can never be mistaken for one that may see all tenants.

Companion collections: ``_trash`` entries carry the image's payload (its tenant), so the trash is scoped the same
way; the leases (``_locks``, one point per image id, no payload of the image's) are shared: a lease is taken only
after a scoped lookup found the image (``imgsim.services.trash``), so no caller ever leases another tenant's id.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .base import ScoredRecord, StorageOptions, VectorStore
from .types import (
    TENANT_FIELD,
    IdIn,
    PayloadIndex,
    Record,
    StoredPoint,
    Where,
    tenant_is,
    where_all,
)


class AllTenants(enum.Enum):
    ALL = "all tenants"


ALL_TENANTS: Final = AllTenants.ALL
# What a caller may see: one tenant's images, None (the images of no tenant), or ALL_TENANTS (operators only).
Visibility = str | None | AllTenants

# Companions shared by every tenant: their points are bookkeeping keyed by image id (imgsim.trash.LOCKS_SUFFIX),
# with none of an image's payload. Every other companion (the trash) is scoped like the collection itself.
SHARED_COMPANIONS = ("_locks",)


def tenant_of_payload(payload: Mapping[str, Any]) -> str | None:
    return payload.get(TENANT_FIELD) or None


def scoped(store: VectorStore, visibility: Visibility) -> VectorStore:
    """``store`` as a caller with this visibility sees it (``ALL_TENANTS``: the store itself)."""
    if visibility is ALL_TENANTS:
        return store
    return TenantView(store, visibility)


class TenantView(VectorStore):
    """One tenant's part of a store (``tenant`` None: the points of no tenant). Only the primitives are wrapped;
    everything ``VectorStore`` builds on them (get, find_by_key, search, search_batch, paging) follows."""

    def __init__(self, inner: VectorStore, tenant: str | None) -> None:
        super().__init__(inner.collection, dim=inner.dim, options=inner.options)
        self.inner = inner
        self.tenant = tenant
        self.backend = inner.backend
        self._scope = tenant_is(tenant)

    def _within(self, where: Where | IdIn | None) -> Where:
        scoped_where = where_all(where, self._scope)
        assert scoped_where is not None  # the scope itself is never empty
        return scoped_where

    def _mine(self, payload: Mapping[str, Any]) -> bool:
        return tenant_of_payload(payload) == self.tenant

    # -- primitives -------------------------------------------------------------------------------------------

    def _create_or_check(self) -> None:
        self.inner.ensure_collection()

    def _upsert(self, points: Sequence[StoredPoint], only_if: Where | None) -> None:
        for point in points:
            if not self._mine(point.payload):
                raise ValueError(f"point {point.id} of tenant {tenant_of_payload(point.payload)!r} written through "
                                 f"the view of tenant {self.tenant!r}")
        # Existing points are overwritten only when they are this tenant's (new ids are inserted).
        self.inner._upsert(points, self._within(only_if))

    def _delete(self, selector: IdIn | Where) -> None:
        self.inner._delete(self._within(selector))

    def _set_fields(self, where: Where, fields: Mapping[str, Any]) -> None:
        if TENANT_FIELD in fields:
            raise ValueError("a tenant's view cannot change a point's tenant")
        self.inner._set_fields(self._within(where), fields)

    def _retrieve(self, ids: Sequence[str], with_vectors: bool) -> list[Record]:
        return [record for record in self.inner._retrieve(ids, with_vectors) if self._mine(record.payload)]

    def _scroll(self, where: Where | None, limit: int, offset: str | None, with_vectors: bool,
                fields: Sequence[str] | None) -> tuple[list[Record], str | None]:
        return self.inner._scroll(self._within(where), limit, offset, with_vectors, fields)

    def _count(self, where: Where | None) -> int:
        return self.inner._count(self._within(where))

    def _query(self, vector: Sequence[float], limit: int, offset: int, where: Where | None,
               score_threshold: float | None) -> list[ScoredRecord]:
        return self.inner._query(vector, limit, offset, self._within(where), score_threshold)

    def _query_batch(self, requests: Sequence[tuple[Sequence[float], int, Where | None]], score_threshold: float | None,
                     fields: Sequence[str] | None) -> list[list[ScoredRecord]]:
        return self.inner._query_batch([(vector, limit, self._within(where)) for vector, limit, where in requests],
                                       score_threshold, fields)

    def companion(self, suffix: str, *, dim: int, options: StorageOptions | None = None) -> VectorStore:
        other = self.inner.companion(suffix, dim=dim, options=options)
        return other if suffix in SHARED_COMPANIONS else TenantView(other, self.tenant)

    def close(self) -> None:
        """Nothing: the view owns no connection (the store it shows does)."""

    def describe(self) -> str:
        return self.inner.describe()

    def payload_indexes(self) -> dict[str, PayloadIndex]:
        return self.inner.payload_indexes()


__all__ = ["ALL_TENANTS", "SHARED_COMPANIONS", "AllTenants", "TenantView", "Visibility", "scoped", "tenant_of_payload"]
