"""Print how similar two images are: score (0..1) and percent."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

import numpy as np
from imgsim.scoring import percent_from_score, score_from_cosine

from .common import EXIT_OK
from .index import read_image_argument

if TYPE_CHECKING:
    from ..session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A")
    parser.add_argument("b", metavar="B")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace, session: Session) -> int:
    embedder = session.embedder
    images = [read_image_argument(path, embedder) for path in (args.a, args.b)]
    first, second = embedder.embed_decoded(images)
    # Unit-length vectors: the dot product is the cosine similarity.
    score = score_from_cosine(float(np.dot(first, second)))
    percent = percent_from_score(score)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "score": score, "percent": percent, "model": embedder.model_name}))
    else:
        print(f"{percent:.1f}% similar (score {score:.4f})")
    return EXIT_OK
