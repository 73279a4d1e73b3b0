"""Schemathesis against the search API, driven only by the API's own /openapi.json, with all its checks.

This is the run API teams do (``schemathesis run URL/openapi.json -H "x-api-key: ..." --checks all``), against the
real handler behind `imgsim serve`'s API Gateway emulation (uvicorn/h11: body limits, binary bodies as base64, the
format-2.0 event), on a stack holding a few real photos so that answers carry results, images and trash entries.
Every phase runs (examples, coverage, fuzzing, stateful); a failure of any check fails the run. The one accepted
exception: a method a path lacks is answered 404 as API Gateway does, not 405, so ``unsupported_method`` is
excluded and tests/schemathesis_hooks.py checks those requests for exactly 404 instead. The hooks also generate
real images where the document asks for one (a schema cannot say "a JPEG").

Why the CLI in a subprocess rather than schemathesis' pytest integration against an ASGI adapter: the CLI runs all
four phases (the pytest integration runs generated cases only), it is the command the issue and API teams run,
its hooks and registered formats stay out of the test process, and the HTTP front end is tested with the handler.

- tests/test_search_api_fuzz.py: a bounded run (``--max-examples 25``, a fixed seed: a failure in CI replays).
- ``make fuzz``: ``python tests/api_fuzz.py --max-examples 300`` with a random seed (printed); FUZZ_ARGS passes more
  (``--url http://127.0.0.1:3000 --key KEY`` runs against a stack already running; ``--seed N`` replays one).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from serve_support import API_KEY, BUCKET, Serve

PHOTOS_DIR = REPO_ROOT.parent / "shared" / "datasets" / "photos"
# A few photos from each block of the data set (cats, dogs, monkeys, squirrels), and one twice: a duplicate group.
PHOTO_INDEXES = (3, 150, 600, 700, 1100, 1300, 1500)


def seed_photos(serve: Serve, photos_dir: Path = PHOTOS_DIR) -> dict[str, str]:
    """Put the photos in the stack's bucket and wait until each is indexed: {id: key}."""
    from imgsim.ids import point_id_for_object

    s3 = serve.s3()
    chosen = sorted(photos_dir.glob("*.jpg"))
    keys = {f"photos/{chosen[i].name}": chosen[i] for i in PHOTO_INDEXES}
    keys["photos/copy/again.jpg"] = chosen[PHOTO_INDEXES[0]]
    for key, path in keys.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ContentType="image/jpeg")
    ids = {point_id_for_object(BUCKET, key): key for key in keys}
    for point_id in ids:
        serve.wait_indexed(point_id)
    return ids


def config(ids: dict[str, str]) -> str:
    """A schemathesis config: the seeded images' ids as values of the path's ``id`` and of the examples of
    /recommend, half the time (the rest stays generated), so that those operations reach existing images instead of
    answering 404 to random UUIDs. Only fields whose value no other field constrains: schemathesis puts a value in
    after generating the body, so binding ``id`` and ``key`` of /search (exactly one of them) or ``keep`` and
    ``remove`` of /duplicates/resolve (never the same image) would make requests the document calls invalid and
    report their refusal as a failure."""
    lines = [f"[dictionaries.ids]\nvalues = {json.dumps(sorted(ids))}", "[parameters]"]
    lines += [f'"{where}" = {{ dictionary = "ids", probability = 0.5 }}' for where in ("path.id", "body.positive[*]")]
    return "\n".join(lines) + "\n"


def command(url: str, key: str, *, max_examples: int, seed: int, config_file: Path | None, workers: str) -> list[str]:
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "-H", f"x-api-key: {key}",
           "--checks", "all", "--exclude-checks", "unsupported_method", "--max-examples", str(max_examples),
           "--seed", str(seed), "--workers", workers, "--generation-database", "none", "--no-color"]
    if config_file is not None:
        cmd[3:3] = ["--config-file", str(config_file)]  # an option of schemathesis itself, before "run"
    return cmd


def run(url: str, key: str, *, max_examples: int, seed: int, ids: dict[str, str] | None = None,
        workers: str = "1", capture: bool = True) -> subprocess.CompletedProcess[str]:
    """One schemathesis run; its exit code is 0 only when no check failed."""
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as folder:
        config_file = None
        if ids:
            config_file = Path(folder) / "schemathesis.toml"
            config_file.write_text(config(ids))
        cmd = command(url, key, max_examples=max_examples, seed=seed, config_file=config_file, workers=workers)
        return subprocess.run(cmd, env=env, cwd=folder, text=True, capture_output=capture, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=300, help="test cases per operation and phase")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: a random seed)")
    parser.add_argument("--workers", default="1", help="concurrent requests ('auto', or 1-64)")
    parser.add_argument("--url", help="an API already running (default: start imgsim serve, with photos)")
    parser.add_argument("--key", default=API_KEY, help="its API key (with --url)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    print(f"schemathesis seed {seed} (replay: --seed {seed})", flush=True)
    if args.url:
        return run(args.url.rstrip("/"), args.key, max_examples=args.max_examples, seed=seed, workers=args.workers,
                   capture=False).returncode
    with tempfile.TemporaryDirectory(prefix="imgsim-fuzz-") as folder:
        serve = Serve(Path(folder) / "data")
        try:
            serve.wait_ready()
            ids = seed_photos(serve)
            return run(serve.api_url, API_KEY, max_examples=args.max_examples, seed=seed, ids=ids,
                       workers=args.workers, capture=False).returncode
        finally:
            serve.stop()
            serve.kill()


if __name__ == "__main__":
    sys.exit(main())
