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
(``imgsim.composition.Root.refresh``), so warm environments follow a switch without a deploy.

The CLI reads and writes one model's collection by name (``open_model_store``): opening resolves the name here,
so ``imgsim.store`` (the backends) never depends on this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import CollectionMismatch, ConfigError
from .settings import Settings
from .store import Catalog, StorageOptions, VectorStore, open_catalog, storage_options

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


def open_model_store(
    settings: Settings, *, dim: int, model: str, collection: str | None = None, one_shot: bool = False,
) -> VectorStore:
    """The collection of ``model`` that the name in ``settings`` (or ``collection``) leads to; closing the store
    closes its connection.

    The name is resolved (one request to a server): an alias leads to its collection; when nothing exists under
    the name yet, that model's collection is created behind the name as an alias (as the functions do); when the
    name leads to another model's collection, ConfigError (searching or writing across models would be wrong).
    ``one_shot``: the process makes one search and exits (``imgsim search``); see
    ``StorageOptions.search_quantized``."""
    catalog = open_catalog(settings)
    try:
        return open_in_catalog(catalog, collection or settings.collection, model=model, dim=dim,
                               options=storage_options(settings, one_shot=one_shot), owned=True)
    except BaseException:
        catalog.close()
        raise


def open_in_catalog(
    catalog: Catalog, name: str, *, model: str, dim: int, options: StorageOptions | None = None, owned: bool = False,
) -> VectorStore:
    """``open_model_store`` on an open catalog. ``owned``: the store is the catalog's only user (closing it
    closes the catalog); otherwise the catalog's owner closes it."""
    physical = catalog.alias_target(name)
    if physical is not None:
        served = model_of(name, physical)
        if served is not None and served != model:
            raise ConfigError(
                f"{name!r} serves model {served!r} (collection {physical!r}), not {model!r}: set IMGSIM_MODEL="
                f"{served}, or build that model's collection with `imgsim reindex --model {model}`"
            )
    elif not catalog.exists(name):
        physical = resolve(catalog, name, model, dim_of={model: dim}, options=options).serving.collection
    opener = catalog.open_owned if owned else catalog.open_store
    return opener(physical or name, dim=dim, options=options)
