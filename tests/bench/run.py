#!/usr/bin/env python3
"""`make bench`: run every tests/bench/bench_*.py module's ``main()`` in name order.

Each benchmark runs in its own Python process: they set environment variables,
start moto mocks and open embedded Qdrant stores, and one must not leak into
the next. A benchmark fails if ``main()`` raises or returns non-zero; the run
goes on with the rest, then exits 1 naming every failure.

    python tests/bench/run.py            # all of them
    python tests/bench/run.py embed      # only bench_embed.py (names are substrings)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

# Imports the module from its path and exits with main()'s return value.
BOOTSTRAP = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location(sys.argv[1], sys.argv[2])
module = importlib.util.module_from_spec(spec)
sys.modules[sys.argv[1]] = module
spec.loader.exec_module(module)
if not hasattr(module, "main"):
    sys.exit(f"{sys.argv[2]} has no main()")
sys.exit(module.main() or 0)
"""


def discover(selected: list[str]) -> list[Path]:
    found = sorted(BENCH_DIR.glob("bench_*.py"))
    if selected:
        found = [path for path in found if any(name in path.stem for name in selected)]
    return found


def main(argv: list[str] | None = None) -> int:
    selected = sys.argv[1:] if argv is None else argv
    benches = discover(selected)
    if not benches:
        print(f"bench: no tests/bench/bench_*.py matching {selected or 'anything'}", file=sys.stderr)
        return 1
    failures: list[str] = []
    for path in benches:
        print(f"\n=== {path.stem} " + "=" * max(0, 70 - len(path.stem)), flush=True)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", BOOTSTRAP, path.stem, str(path)], cwd=BENCH_DIR.parents[1], check=False
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            failures.append(f"{path.stem} (exit {result.returncode})")
            print(f"=== {path.stem} FAILED with exit code {result.returncode} after {elapsed:.0f} s", flush=True)
        else:
            print(f"=== {path.stem} done in {elapsed:.0f} s", flush=True)
    if failures:
        print(f"\nbench: FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    print(f"\nbench: all {len(benches)} benchmarks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
