"""The search API's services: what it does, in imgsim's terms (value objects in, JSON documents out, imgsim's errors
for refusals). The HTTP side (``imgsim.http``, ``functions/search``) parses requests into these value objects and
maps the errors to statuses; nothing here knows HTTP.

- ``search``: search, compare, health (``imgsim.services.search``)
- ``images``: get, create an upload (``imgsim.services.images``)
- ``trash``: delete (to the trash), list, restore, empty (``imgsim.services.trash``)
- ``curation``: duplicate groups, resolving them, recommendations (``imgsim.services.curation``)
- ``keys``: the API key the deployment expects (``imgsim.services.keys``)

``Services.build`` makes all five from one set of dependencies, each typed by its interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..settings import ApiSettings
from ..store import VectorStore
from .curation import CurationService, DuplicatesQuery, RecommendRequest, Resolution
from .images import ImageService, UploadRequest
from .keys import ApiKeys
from .ports import ImageEmbedder, ObjectStorage, PhaseTimer
from .search import Box, Health, ImageQuery, SearchFilters, SearchRequest, SearchService
from .trash import TrashService

if TYPE_CHECKING:
    from ..deployment import Layout


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    search: SearchService
    images: ImageService
    curation: CurationService
    trash: TrashService
    keys: ApiKeys

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
        value; ``layout``: the deployment's collections, for health. Nothing is called here: building is free."""
        images = ImageService(settings, store=store, objects=objects)
        trash = TrashService(settings, store=store, objects=objects, images=images)
        return cls(
            settings=settings,
            search=SearchService(settings, embedder=embedder, store=store, objects=objects, layout=layout),
            images=images,
            curation=CurationService(settings, embedder=embedder, store=store, objects=objects, images=images,
                                     trash=trash),
            trash=trash,
            keys=ApiKeys(settings, read_secret=read_secret),
        )


__all__ = [
    "ApiKeys",
    "Box",
    "CurationService",
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
