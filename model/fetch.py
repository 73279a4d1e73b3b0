#!/usr/bin/env python3
"""Put the pinned model file(s) next to models.json, sha256-verified.

Looks, in order, in ``$MODEL_MIRROR``, then ``../shared/models`` beside the
project root (machines without internet), then downloads from the manifest's
public URLs. A file already in place with the right hash is kept.

Standard library only, so the Lambda layer build can run it with any Python.

    python model/fetch.py [--model NAME | --all] [--dest DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "models.json"
SHARED_MIRROR = HERE.parent.parent / "shared" / "models"


class FetchError(Exception):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mirrors() -> list[Path]:
    found = []
    if os.environ.get("MODEL_MIRROR"):
        found.append(Path(os.environ["MODEL_MIRROR"]))
    found.append(SHARED_MIRROR)
    return found


def fetch(entry: dict, dest_dir: Path) -> Path:
    name, expected = entry["file"], entry["sha256"].lower()
    target = dest_dir / name
    if target.is_file() and sha256_of(target) == expected:
        return target
    looked: list[str] = []
    dest_dir.mkdir(parents=True, exist_ok=True)
    for mirror in mirrors():
        candidate = mirror / name
        looked.append(str(candidate))
        if candidate.is_file():
            actual = sha256_of(candidate)
            if actual != expected:
                raise FetchError(f"{candidate}: sha256 {actual} does not match the pinned {expected}")
            shutil.copyfile(candidate, target)
            return target
    for url in entry.get("urls", []):
        looked.append(url)
        try:
            with tempfile.NamedTemporaryFile(dir=dest_dir, delete=False, suffix=".part") as tmp, \
                    urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
            actual = sha256_of(Path(tmp.name))
            if actual != expected:
                os.unlink(tmp.name)
                raise FetchError(f"{url}: sha256 {actual} does not match the pinned {expected}")
            os.replace(tmp.name, target)
            return target
        except OSError as exc:  # unreachable host, HTTP error: try the next source
            print(f"fetch: {url}: {exc}", file=sys.stderr)
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)
    raise FetchError(
        f"model file {name} (sha256 {expected}) not found; looked in: {', '.join(looked)}. "
        "Set MODEL_MIRROR to a directory holding it."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="manifest name, repeatable (default: the manifest's default); the first is the "
                             "default of the manifest copied to --dest")
    parser.add_argument("--all", action="store_true", help="every model in the manifest")
    parser.add_argument("--dest", type=Path, default=HERE, help="directory to put the file(s) in")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help=argparse.SUPPRESS)  # tests
    args = parser.parse_args(argv)
    manifest = json.loads(args.manifest.read_text())
    names = list(manifest["models"]) if args.all else list(dict.fromkeys(args.model or [manifest["default"]]))
    try:
        for name in names:
            if name not in manifest["models"]:
                raise FetchError(f"model {name!r} is not in {args.manifest}; known: {sorted(manifest['models'])}")
            path = fetch(manifest["models"][name], args.dest)
            print(f"model {name}: {path} (sha256 verified)")
        if args.dest.resolve() != args.manifest.parent.resolve():
            # The copy's default is the first model asked for: what the layer (or folder) is built around.
            copied = {**manifest, "default": names[0] if args.model else manifest["default"]}
            (args.dest / MANIFEST.name).write_text(json.dumps(copied, indent=2) + "\n")
    except FetchError as exc:
        print(f"fetch: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
