"""Print how similar two images are: score (0..1) and percent.

With ``--api URL`` the API compares them (``POST /compare``), with its model; printed the same way.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

import numpy as np
from imgsim.scoring import percent_from_score, score_from_cosine

from .common import EXIT_OK
from .index import read_image_argument

if TYPE_CHECKING:
    from ..api_client import ApiClient
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
    return write(args, score=score, percent=percent_from_score(score), model=embedder.model_name)


def run_remote(args: argparse.Namespace, api: ApiClient) -> int:
    from ..remote import read_file

    answer = api.compare(read_file(args.a), read_file(args.b))
    return write(args, score=answer["score"], percent=answer["percent"], model=answer["model"])


def write(args: argparse.Namespace, *, score: float, percent: float, model: str) -> int:
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "score": score, "percent": percent, "model": model}))
    else:
        print(f"{percent:.1f}% similar (score {score:.4f})")
    return EXIT_OK
