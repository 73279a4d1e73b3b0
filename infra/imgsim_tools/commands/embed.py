"""Print one JSON object per file: {"file", "vector", "model"}."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from imgsim.errors import ImageError

from .common import EXIT_OK, EXIT_USAGE
from .index import DEFAULT_INDEX_BATCH, _describe, load_batches, load_file

if TYPE_CHECKING:
    from ..session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE")


def run(args: argparse.Namespace, session: Session) -> int:
    embedder = session.embedder
    bad = 0
    paths = [Path(p) for p in args.files]
    for batch in load_batches(paths, DEFAULT_INDEX_BATCH, lambda p: load_file(p, embedder)):
        good = [f for f in batch if f.image is not None]
        vectors = iter(embedder.embed_decoded([f.image for f in good]))
        for loaded in batch:
            if loaded.error is not None:
                if not isinstance(loaded.error, (ImageError, OSError)):
                    raise loaded.error
                print(f"imgsim: error: {loaded.path}: {_describe(loaded.error)}", file=sys.stderr)
                bad += 1
                continue
            line = {"file": str(loaded.path), "vector": vector_json(next(vectors)), "model": embedder.model_name}
            print(json.dumps(line, separators=(",", ":")))
    return EXIT_USAGE if bad else EXIT_OK


def vector_json(vector: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32:
    exact, and about half the text of printing them as float64."""
    return [float(str(x)) for x in vector.astype(np.float32)]
