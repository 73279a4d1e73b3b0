"""The search API's services: what it does, in imgsim's terms (value objects in, JSON documents out, imgsim's errors
for refusals). The HTTP side (``imgsim.http``, ``functions/search``) parses requests into these value objects and
maps the errors to statuses; nothing here knows HTTP.

- ``search``: search, compare, health (``imgsim.services.search``)
- ``images``: get, create an upload (``imgsim.services.images``)
- ``trash``: delete (to the trash), list, restore, empty (``imgsim.services.trash``)
- ``curation``: duplicate groups, resolving them, recommendations (``imgsim.services.curation``)
- ``keys``: the API key the deployment expects (``imgsim.services.keys``)

``Services.build`` makes all five from one set of dependencies, each typed by its interface.

**Tenants.** ``Services.for_tenant(tenant)`` is the same services as a caller of that tenant sees them: each one's
store is ``imgsim.store.scoped``'s view of the tenant's points (and the trash's), and uploads go under the tenant's
folder. The routes take it per request from the caller's principal; the services' own methods take no tenant, so
none can forget one. ``build`` itself sees every tenant (``ALL_TENANTS``): what the CLI's operator commands use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..settings import ApiSettings
from ..store import VectorStore
from ..store.scoped import ALL_TENANTS, Visibility, scoped
from .curation import CurationService, DuplicatesQuery, RecommendRequest, Resolution
from .images import ImageService, UploadRequest
from .keys import ApiKeys
from .ports import ImageEmbedder, ObjectStorage, PhaseTimer
from .search import Box, Health, ImageQuery, SearchFilters, SearchRequest, SearchService
from .trash import TrashService

if TYPE_CHECKING:
    from ..deployment import Layout


@dataclass(frozen=True)
class Dependencies:
    """What the services are made of (``Services.build``'s arguments), kept to make a tenant's view of them."""

    store: Callable[[], VectorStore]
    embedder: Callable[[], ImageEmbedder]
    objects: Callable[[], ObjectStorage]
    layout: Callable[[], Layout] | None = None


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    search: SearchService
    images: ImageService
    curation: CurationService
    trash: TrashService
    keys: ApiKeys
    dependencies: Dependencies
    visibility: Visibility = ALL_TENANTS

    @classmethod
    def build(
        cls,
        settings: ApiSettings,
        *,
        store: Callable[[], VectorStore],
        embedder: Callable[[], ImageEmbedder],
        objects: Callable[[], ObjectStorage],
        read_secret: Callable[[str], str],
        layout: Callable[[], Layout] | None = None,
    ) -> Services:
        """``store`` and ``embedder``: the served collection and its model, asked for on each request (they change
        during a model switch); ``objects``: S3 (``imgsim.objects.S3Objects``); ``read_secret``: an SSM parameter's
        value; ``layout``: the deployment's collections, for health. Nothing is called here: building is free.
        The services see every tenant; a request's are ``for_tenant`` its caller's."""
        return cls._make(settings, Dependencies(store, embedder, objects, layout),
                         ApiKeys(settings, read_secret=read_secret), ALL_TENANTS)

    def for_tenant(self, tenant: str | None) -> Services:
        """These services as a caller of ``tenant`` sees them (None: a caller of no tenant, who sees the images of no
        tenant). Made per request: building is free, and the key ring (``keys``) is shared."""
        return self._make(self.settings, self.dependencies, self.keys, tenant)

    @classmethod
    def _make(cls, settings: ApiSettings, deps: Dependencies, keys: ApiKeys, visibility: Visibility) -> Services:
        base = deps.store
        store = base if visibility is ALL_TENANTS else (lambda: scoped(base(), visibility))
        images = ImageService(settings, store=store, objects=deps.objects, visibility=visibility)
        trash = TrashService(settings, store=store, objects=deps.objects, images=images)
        return cls(
            settings=settings,
            search=SearchService(settings, embedder=deps.embedder, store=store, objects=deps.objects,
                                 layout=deps.layout),
            images=images,
            curation=CurationService(settings, embedder=deps.embedder, store=store, objects=deps.objects,
                                     images=images, trash=trash),
            trash=trash,
            keys=keys,
            dependencies=deps,
            visibility=visibility,
        )


__all__ = [
    "ApiKeys",
    "Box",
    "CurationService",
    "Dependencies",
    "DuplicatesQuery",
    "Health",
    "ImageEmbedder",
    "ImageQuery",
    "ImageService",
    "ObjectStorage",
    "PhaseTimer",
    "RecommendRequest",
    "Resolution",
    "SearchFilters",
    "SearchRequest",
    "SearchService",
    "Services",
    "TrashService",
    "UploadRequest",
]
