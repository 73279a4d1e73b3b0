#!/usr/bin/env python3
"""Remove from the built layer what the functions never load (run by the layer Makefile after pip).

Two kinds of removal, each measured on the x86_64 build (figures: bytes unzipped):

* **Distributions the Lambda runtime already provides**, removed file by file from their
  ``RECORD`` (pip's own manifest of what it installed), so nothing of them is left half-present:
  boto3 and its dependencies (botocore 23 MB, s3transfer, jmespath, python-dateutil, six: ~25 MB
  in all). The python3.13 runtime ships boto3/botocore on ``sys.path`` after ``/opt/python``; the
  functions use only S3 and SSM calls and ``AWS_ENDPOINT_URL`` (botocore >= 1.31, which every
  python3.13 runtime release carries). They are pulled in only as dependencies (aws-xray-sdk needs
  botocore), so pip cannot simply be told to skip them.
* **Files no import in the functions reaches**, by path: numpy's build tooling (``f2py``: 1.5 MB)
  and its SIMD test harness (``_core/_simd``, 1.5 MB in numpy 2, imported only by numpy's tests);
  Pillow's Tk bridge; python-multipart's
  deprecated ``multipart`` import name.

``tests/test_packaging.py`` checks the other direction: every top-level package left in the layer
is loaded by one of the functions' invocations, so a new unused dependency fails the tests.
Standard library only (it runs with the build's Python).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "python_dateutil", "six")
# protobuf (2.7 MB), tqdm, flatbuffers, backports.strenum, ml_dtypes (2 MB): ai-edge-litert's tooling (model
# conversion and schemas, progress bars, extra tensor dtypes), never imported by its Interpreter (measured on 2.3.0: modules imported and libraries mapped after allocate_tensors and invoke).
NEVER_LOADED_DISTS = ("protobuf", "tqdm", "flatbuffers", "backports.strenum", "backports_strenum", "ml_dtypes")
# Packages of which the functions load only a few files: everything else in them goes. ai-edge-litert 2.3 ships
# its model tooling (compiler plugins for NPU vendors, converters, the WebGPU accelerator (19 MB), schema and
# proto modules: 33 MB in all) beside the interpreter, which loads exactly these (measured as above).
KEEP_ONLY = {
    "ai_edge_litert": ("__init__.py", "interpreter.py", "metrics_interface.py", "metrics_portable.py",
                       "_pywrap_litert_interpreter_wrapper*.so", "libpywrap_litert_common.so", "libLiteRt.so"),
}
NEVER_LOADED_PATHS = (
    "numpy/f2py",
    "numpy/_core/_simd.*",
    "numpy/random/_examples",
    "PIL/_imagingtk.*",
    # Pillow's text rendering (ImageFont's C module and the libraries only it links: 3.3 MB); imgsim draws no text.
    "PIL/_imagingft.*",
    "pillow.libs/libfreetype-*",
    "pillow.libs/libharfbuzz-*",
    "pillow.libs/libpng16-*",
    "pillow.libs/libbrotli*",
    "multipart",  # python-multipart's old import name (a shim); imgsim imports python_multipart
)


def remove_distribution(site: Path, name: str) -> int:
    """Delete every file of the installed distribution ``name`` listed in its RECORD; bytes freed."""
    freed = 0
    for dist_info in site.glob(f"{name}-*.dist-info"):
        for line in (dist_info / "RECORD").read_text().splitlines():
            rel = line.rsplit(",", 2)[0]
            path = (site / rel).resolve()
            if path.is_file() and site.resolve() in path.parents:
                freed += path.stat().st_size
                path.unlink()
        shutil.rmtree(dist_info, ignore_errors=True)
    return freed


def remove_path(site: Path, pattern: str) -> int:
    freed = 0
    for path in site.glob(pattern):
        if path.is_dir():
            freed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
        elif path.is_file():
            freed += path.stat().st_size
            path.unlink()
    return freed


def keep_only(site: Path, package: str, patterns: tuple[str, ...]) -> int:
    root = site / package
    if not root.is_dir():
        return 0
    kept = {path for pattern in patterns for path in root.glob(pattern)}
    freed = 0
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and path not in kept:
            freed += path.stat().st_size
            path.unlink()
    return freed


def prune_empty_dirs(site: Path) -> None:
    for path in sorted((p for p in site.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: prune.py LAYER_PYTHON_DIR", file=sys.stderr)
        return 2
    site = Path(argv[0])
    runtime = sum(remove_distribution(site, name) for name in RUNTIME_PROVIDED)
    unused = sum(remove_distribution(site, name) for name in NEVER_LOADED_DISTS)
    unused += sum(remove_path(site, pattern) for pattern in NEVER_LOADED_PATHS)
    unused += sum(keep_only(site, package, patterns) for package, patterns in KEEP_ONLY.items())
    prune_empty_dirs(site)
    print(f"pruned {runtime / 1e6:.1f} MB the runtime provides (boto3 and its dependencies), "
          f"{unused / 1e6:.1f} MB never loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
