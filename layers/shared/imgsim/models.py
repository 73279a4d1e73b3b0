"""The model manifest (``models.json``) and where the model file lives.

Adding a model is a data change: a new entry in ``model/models.json`` with its
file, sha256, input size and range and output dimension. Nothing here is
specific to one model.

A *model directory* holds ``models.json`` and the model files side by side. It is
looked up in this order, first hit wins:

1. ``IMGSIM_MODEL_DIR``
2. ``<layer root>/model``: the Lambda layer unpacks to ``/opt`` with this package
   in ``/opt/python/imgsim``, so this is ``/opt/model`` on Lambda, and the same
   relative place in a ``sam build`` output run by the local invoke runner
3. ``<repo>/model`` (a source checkout, after ``make model``)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ChecksumMismatch, ConfigError, ModelNotFound

MANIFEST_NAME = "models.json"
_HERE = Path(__file__).resolve()
# <layer>/python/imgsim/models.py -> <layer>/model (/opt/model on Lambda).
LAYER_MODEL_DIR = _HERE.parents[2] / "model"
# <repo>/layers/shared/imgsim/models.py -> <repo>/model.
REPO_MODEL_DIR = _HERE.parents[3] / "model"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str
    urls: tuple[str, ...]
    sha256: str
    input_size: tuple[int, int]  # (height, width)
    input_range: tuple[float, float]
    output_dim: int
    license: str
    description: str = ""


def candidate_model_dirs(model_dir: str | None = None) -> list[Path]:
    if model_dir:
        return [Path(model_dir)]
    return [LAYER_MODEL_DIR, REPO_MODEL_DIR]


def load_manifest(path: Path) -> tuple[str, dict[str, ModelSpec]]:
    try:
        raw = json.loads(path.read_text())
        specs = {
            name: ModelSpec(
                name=name,
                file=entry["file"],
                urls=tuple(entry.get("urls", ())),
                sha256=entry["sha256"].lower(),
                input_size=(int(entry["input_size"][0]), int(entry["input_size"][1])),
                input_range=(float(entry["input_range"][0]), float(entry["input_range"][1])),
                output_dim=int(entry["output_dim"]),
                license=entry.get("license", "unknown"),
                description=entry.get("description", ""),
            )
            for name, entry in raw["models"].items()
        }
        return raw["default"], specs
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ConfigError(f"cannot read model manifest {path}: {exc}") from exc


def find_model_dir(model_dir: str | None = None) -> Path:
    dirs = candidate_model_dirs(model_dir)
    for directory in dirs:
        if (directory / MANIFEST_NAME).is_file():
            return directory
    raise ModelNotFound(
        f"no {MANIFEST_NAME} found in: {', '.join(str(d) for d in dirs)} "
        "(set IMGSIM_MODEL_DIR, or run `make model` in a checkout)"
    )


def resolve_model(name: str | None = None, model_dir: str | None = None) -> tuple[ModelSpec, Path]:
    """Return the spec and the on-disk path of the named (or default) model."""
    directory = find_model_dir(model_dir)
    default, specs = load_manifest(directory / MANIFEST_NAME)
    wanted = name or default
    if wanted not in specs:
        raise ConfigError(f"model {wanted!r} is not in {directory / MANIFEST_NAME}; known: {sorted(specs)}")
    spec = specs[wanted]
    path = directory / spec.file
    if not path.is_file():
        raise ModelNotFound(
            f"model file {spec.file} (sha256 {spec.sha256}) not found in {directory}; run `make model`"
        )
    return spec, path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str) -> None:
    actual = sha256_of(path)
    if actual != expected_sha256.lower():
        raise ChecksumMismatch(f"{path}: sha256 is {actual}, expected {expected_sha256}")
