"""Where the imgsim project's files are: the template, the functions, the built artifacts.

The developer tooling (``imgsim serve``, the invoke runner) runs the project's own handlers and reads its
template, so it needs a checkout. It is found, in order, from ``IMGSIM_PROJECT_DIR``, from this package's
location (an editable install: ``pip install -e .`` from the checkout), or from the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR_VAR = "IMGSIM_PROJECT_DIR"
BUILD_DIR = Path(".aws-sam") / "build"


class ProjectNotFound(Exception):
    """No checkout of the imgsim project was found (its template.yaml and functions/)."""


def _is_project(path: Path) -> bool:
    return (path / "template.yaml").is_file() and (path / "functions").is_dir()


def project_root() -> Path:
    explicit = os.environ.get(PROJECT_DIR_VAR)
    if explicit:
        root = Path(explicit).resolve()
        if not _is_project(root):
            raise ProjectNotFound(f"{PROJECT_DIR_VAR}={explicit} is not an imgsim checkout (no template.yaml + functions/)")
        return root
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if _is_project(candidate):
            return candidate
    raise ProjectNotFound(
        "this command needs a checkout of the imgsim project: run it from one, install the tools from it "
        f"(`pip install -e '.[cli]'`), or set {PROJECT_DIR_VAR}"
    )


def template_path(root: Path | None = None) -> Path:
    """The built template when there is one (what `sam build` produced, what Lambda would run), else the source."""
    root = root or project_root()
    built = root / BUILD_DIR / "template.yaml"
    return built if built.is_file() else root / "template.yaml"


def handler_file(function_dir: str, root: Path | None = None) -> Path:
    return (root or project_root()) / "functions" / function_dir / "app.py"
