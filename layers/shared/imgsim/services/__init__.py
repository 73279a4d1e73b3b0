"""The search API's services: what it does, in imgsim's terms (value objects in, JSON documents out, imgsim's errors
for refusals). The HTTP side (``imgsim.http``, ``functions/search``) parses requests into these value objects and
maps the errors to statuses; nothing here knows HTTP.

- ``search``: search, compare, health (``imgsim.services.search``)
- ``images``: get, delete, create an upload (``imgsim.services.images``)
- ``curation``: duplicate groups, resolving them, recommendations (``imgsim.services.curation``)
- ``keys``: the API key the deployment expects (``imgsim.services.keys``)

``Services.build`` makes all four from one set of dependencies, each typed by its interface.
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
from .search import Health, ImageQuery, SearchFilters, SearchRequest, SearchService

if TYPE_CHECKING:
    from ..deployment import Layout


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    search: SearchService
    images: ImageService
    curation: CurationService
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
        return cls(
            settings=settings,
            search=SearchService(settings, embedder=embedder, store=store, objects=objects, layout=layout),
            images=images,
            curation=CurationService(settings, embedder=embedder, store=store, objects=objects, images=images),
            keys=ApiKeys(settings, read_secret=read_secret),
        )


__all__ = [
    "ApiKeys",
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
    "UploadRequest",
]
