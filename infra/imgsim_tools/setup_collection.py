#!/usr/bin/env python3
"""Create the Qdrant collection (and its payload indexes) ahead of the first upload, or check it.

The functions create it on first use too; running this once after `sam deploy` catches a wrong URL,
key or a dimension mismatch before any image is indexed.

    QDRANT_URL=https://xyz.cloud.qdrant.io:6333 QDRANT_API_KEY_PARAM=/imgsim/qdrant-api-key \
        python -m imgsim_tools.setup_collection [--collection images]

Uses the same settings as the functions (QDRANT_URL, QDRANT_API_KEY or QDRANT_API_KEY_PARAM read from
SSM, QDRANT_COLLECTION, QDRANT_TIMEOUT, QDRANT_RETRIES, the cluster settings QDRANT_SHARDS,
QDRANT_REPLICATION_FACTOR, QDRANT_WRITE_CONSISTENCY_FACTOR, QDRANT_ON_DISK_PAYLOAD; unset QDRANT_URL =
embedded at QDRANT_PATH, where the cluster settings do not apply). An option wins over its variable.
"""

from __future__ import annotations

import argparse
import os
import sys

from imgsim import settings as names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", help="collection name (default: QDRANT_COLLECTION or 'images')")
    parser.add_argument("--model", help="model name from model/models.json (default: the manifest's default)")
    parser.add_argument("--quantization", choices=("none", "int8", "binary"),
                        help="how the collection stores vectors (default: IMGSIM_QUANTIZATION or int8; docs/performance.md "
                             "\"Memory and quantization\")")
    parser.add_argument("--shards", type=int, help="shard_number at creation (default: QDRANT_SHARDS or the server's)")
    parser.add_argument("--replication-factor", type=int,
                        help="copies of each shard (default: QDRANT_REPLICATION_FACTOR or the server's; 2 in production)")
    parser.add_argument("--write-consistency-factor", type=int,
                        help="replicas that must acknowledge a write (default: QDRANT_WRITE_CONSISTENCY_FACTOR)")
    args = parser.parse_args(argv)
    overrides = {variable: str(value) for value, variable in (
        (args.collection, names.QDRANT_COLLECTION), (args.quantization, names.QUANTIZATION),
        (args.shards, names.QDRANT_SHARDS), (args.replication_factor, names.QDRANT_REPLICATION_FACTOR),
        (args.write_consistency_factor, names.QDRANT_WRITE_CONSISTENCY_FACTOR)) if value}

    from imgsim.deployment import open_model_store
    from imgsim.errors import ImgsimError
    from imgsim.models import resolve_model
    from imgsim.ordering import OrderedStore

    from .session import read_settings

    try:
        # The functions' settings, the options applied; QDRANT_API_KEY_PARAM read from SSM as the functions do.
        settings = read_settings(os.environ, overrides).engine
        spec, _ = resolve_model(args.model or settings.model_name, settings.model_dir)
        store = open_model_store(settings, dim=spec.output_dim, model=spec.name)  # per-model, behind the alias
        try:
            store.ensure_collection()
            OrderedStore(store).tombstones.ensure_collection()  # the indexer's companion collection
            count = store.count()
            physical = store.collection
        finally:
            store.close()
    except ImgsimError as exc:
        print(f"setup_collection: error: {exc}", file=sys.stderr)
        return 1
    where = settings.qdrant_url or f"embedded at {settings.qdrant_path}"
    print(f"collection {settings.collection!r} ready on {where} (alias of {physical!r}): {spec.output_dim}-d cosine, "
          f"quantization {settings.quantization}, {count} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
