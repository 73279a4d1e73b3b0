"""`imgsim serve`: the whole stack on one machine (issue 5). Placeholder until implemented."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("imgsim serve is not implemented yet")
