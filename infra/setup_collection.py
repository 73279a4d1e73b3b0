#!/usr/bin/env python3
"""Create the Qdrant collection (and its payload indexes) ahead of the first upload, or check it.

The functions create it on first use too; running this once after `sam deploy` catches a wrong URL,
key or a dimension mismatch before any image is indexed.

    QDRANT_URL=https://xyz.cloud.qdrant.io:6333 QDRANT_API_KEY_PARAM=/imgsim/qdrant-api-key \
        python infra/setup_collection.py [--collection images]

Uses the same settings as the functions (QDRANT_URL, QDRANT_API_KEY or QDRANT_API_KEY_PARAM read from
SSM, QDRANT_COLLECTION, QDRANT_TIMEOUT, QDRANT_RETRIES; unset QDRANT_URL = embedded at QDRANT_PATH).
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", help="collection name (default: QDRANT_COLLECTION or 'images')")
    parser.add_argument("--model", help="model name from model/models.json (default: the manifest's default)")
    args = parser.parse_args(argv)
    if args.collection:
        os.environ["QDRANT_COLLECTION"] = args.collection

    from imgsim import runtime
    from imgsim.errors import ImgsimError
    from imgsim.models import resolve_model
    from imgsim.store import VectorStore

    try:
        settings = runtime.get_settings()  # resolves QDRANT_API_KEY_PARAM from SSM like the functions do
        spec, _ = resolve_model(args.model or settings.model_name, settings.model_dir)
        store = VectorStore.from_settings(settings, dim=spec.output_dim)
        try:
            store.ensure_collection()
            count = store.count()
        finally:
            store.close()
    except ImgsimError as exc:
        print(f"setup_collection: error: {exc}", file=sys.stderr)
        return 1
    where = settings.qdrant_url or f"embedded at {settings.qdrant_path}"
    print(f"collection {settings.collection!r} ready on {where}: {spec.output_dim}-d cosine, {count} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
