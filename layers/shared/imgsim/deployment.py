"""Collections per model behind one alias: which collection is served, which one is being built.

A model's vectors cannot share a collection with another model's, so each model has its own
collection, ``<QDRANT_COLLECTION>__<model>`` (``images__mobilenet_v3_small_075_224``), and the
functions, the CLI and the API reach it through the alias ``QDRANT_COLLECTION`` (``images``).
``IMGSIM_MODEL`` (the template's ``Model`` parameter; default: the manifest's default) is the model
the deployment is *configured* for:

* nothing there yet: its collection is created and the alias pointed at it (first use);
* the alias points at the configured model's collection: that one is served, nothing else;
* the alias points at another model's collection (a model switch in progress): that one is still
  *served* (queries are embedded with its own model, so searches keep working), and the configured
  model's collection is *building*: the indexer writes every upload and delete to both, and
  ``imgsim reindex --model NAME`` fills it from the bucket, then switches the alias in one step;
* a plain collection with the alias's name (made before per-model names): served as it is, with
  the model its points record (the configured one when it is empty).

The layout is re-read at most every ``IMGSIM_ALIAS_TTL`` seconds (default 30) by running functions
(``imgsim.runtime.refresh``), so warm environments follow a switch without a deploy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import CollectionMismatch, ConfigError
from .store import Catalog, StorageOptions, VectorStore

SEPARATOR = "__"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Target:
    collection: str
    model: str


@dataclass(frozen=True)
class Layout:
    alias: str
    serving: Target
    building: Target | None  # the configured model's collection while another one is served
    created: bool = False  # this resolution created the serving collection and the alias


def collection_for(alias: str, model: str) -> str:
    if not MODEL_NAME.match(model):
        raise ConfigError(f"model name {model!r} cannot name a collection (letters, digits, '_', '.', '-')")
    return f"{alias}{SEPARATOR}{model}"


def model_of(alias: str, collection: str) -> str | None:
    prefix = alias + SEPARATOR
    return collection[len(prefix):] if collection.startswith(prefix) else None


def recorded_model(store: VectorStore) -> str | None:
    """The model one stored point was embedded with (every point records it), None when empty."""
    records, _ = store.scroll(limit=1, fields=["model"])
    model = records[0].payload.get("model") if records else None
    return str(model) if model else None


def resolve(
    catalog: Catalog, alias: str, configured: str, *, dim_of: dict[str, int] | None = None,
    options: StorageOptions | None = None, create: bool = True,
) -> Layout:
    """Where ``alias`` leads now. ``dim_of`` gives a model's vector size (needed to create or to read
    a legacy collection); ``create``: make the configured model's collection and the alias when
    nothing is there yet."""
    dims = dim_of or {}
    target = catalog.alias_target(alias)
    created = False
    if target is not None:
        model = model_of(alias, target)
        if model is None:  # an alias made by hand onto some collection: trust its points
            model = _legacy_model(catalog, target, configured, dims, options)
        serving = Target(target, model)
    elif catalog.exists(alias):
        serving = Target(alias, _legacy_model(catalog, alias, configured, dims, options))
    else:
        serving = Target(collection_for(alias, configured), configured)
        if create:
            store = catalog.open_store(serving.collection, dim=_dim(dims, configured), options=options)
            store.ensure_collection()
            catalog.switch_alias(alias, serving.collection)
            created = True
    building = None if serving.model == configured else Target(collection_for(alias, configured), configured)
    return Layout(alias, serving, building, created)


def _dim(dims: dict[str, int], model: str) -> int:
    if model not in dims:
        raise ConfigError(f"the vector size of model {model!r} is needed here (is it in the manifest?)")
    return dims[model]


def _legacy_model(catalog: Catalog, collection: str, configured: str, dims: dict[str, int],
                  options: StorageOptions | None) -> str:
    """The model a collection without a per-model name holds, read from a point (opened with each
    known model's vector size in turn: the collection checks it)."""
    sizes = [_dim(dims, configured), *(size for model, size in dims.items() if model != configured)]
    mismatch: CollectionMismatch | None = None
    for size in dict.fromkeys(sizes):
        try:
            return recorded_model(catalog.open_store(collection, dim=size, options=options)) or configured
        except CollectionMismatch as exc:
            mismatch = exc
    raise CollectionMismatch(
        f"{mismatch} — collection {collection!r} holds vectors of none of the known models "
        f"({', '.join(sorted(dims))}); set IMGSIM_MODEL to the model it was built with"
    )
