"""`imgsim backfill s3://bucket/prefix` (issue 3). Placeholder until implemented."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", help="s3://bucket/prefix")


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("imgsim backfill is not implemented yet")
