"""Model manifest, model lookup, `model/fetch.py`, and "a second model is a data change"."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DIR
from imgsim import ChecksumMismatch, ConfigError, Embedder, ModelNotFound
from imgsim.composition import Root
from imgsim.models import (
    REPO_MODEL_DIR,
    find_model_dir,
    load_manifest,
    resolve_model,
    sha256_of,
)
from imgsim.preprocess import to_input_tensor
from imgsim.settings import load
from support import load_module_from_path

MANIFEST_PATH = REPO_MODEL_DIR / "models.json"
MANIFEST = json.loads(MANIFEST_PATH.read_text())
DEFAULT = MANIFEST["default"]
DEFAULT_ENTRY = MANIFEST["models"][DEFAULT]
SHARED_MODEL = SHARED_DIR / "models" / DEFAULT_ENTRY["file"]
# A port nothing listens on: connection refused at once, no network needed.
DEAD_URL = "http://127.0.0.1:9/model.tflite"


def load_fetch_module():
    return load_module_from_path("imgsim_model_fetch", REPO_MODEL_DIR / "fetch.py")


@pytest.fixture
def fetch(monkeypatch, tmp_path):
    """fetch.py with no mirror configured and the ../shared mirror pointed at an empty folder."""
    module = load_fetch_module()
    monkeypatch.delenv("MODEL_MIRROR", raising=False)
    empty = tmp_path / "no-shared"
    empty.mkdir()
    monkeypatch.setattr(module, "SHARED_MIRROR", empty)
    return module


def entry_with(**changes) -> dict:
    return {**DEFAULT_ENTRY, **changes}


def embedder_configured_by(variables: dict[str, str]) -> Embedder:
    """The embedder a process configured by ``variables`` gets: its settings read once (``imgsim.settings.load``),
    its composition root's model (IMGSIM_MODEL, or the manifest's default) built with them. No store is opened."""
    root = Root(load(variables))
    return root.embedder(root.configured_model())


# -- manifest -----------------------------------------------------------------------------------


def test_manifest_describes_the_default_model_completely():
    default, specs = load_manifest(MANIFEST_PATH)
    spec = specs[default]
    assert spec.file == "mobilenet_v3_small_075_224_embedder.tflite"
    assert spec.input_size == (224, 224) and spec.input_range == (0.0, 1.0) and spec.output_dim == 1024
    assert spec.license == "Apache-2.0"
    assert spec.urls and all(url.startswith("https://") for url in spec.urls)
    # The pin agrees with ../shared's own SHA256SUMS and with the file in place.
    sums = (SHARED_DIR / "models" / "SHA256SUMS").read_text()
    assert f"{spec.sha256}  {spec.file}" in sums or f"{spec.sha256} *{spec.file}" in sums
    assert sha256_of(REPO_MODEL_DIR / spec.file) == spec.sha256


def test_model_dir_env_wins_and_missing_manifest_is_a_clear_error(tmp_path):
    configured = load({"IMGSIM_MODEL_DIR": str(tmp_path)}).engine.model_dir
    with pytest.raises(ModelNotFound, match=f"no models.json found in: {tmp_path}"):
        find_model_dir(configured)
    with pytest.raises(ModelNotFound, match=f"no models.json found in: {tmp_path}"):
        embedder_configured_by({"IMGSIM_MODEL_DIR": str(tmp_path)})
    assert find_model_dir(load({}).engine.model_dir) == REPO_MODEL_DIR


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match=f"'nope' is not in .*known: \\['{DEFAULT}'\\]"):
        resolve_model("nope")


def test_broken_manifest_is_a_config_error(tmp_path):
    (tmp_path / "models.json").write_text('{"default": "x", "models": {"x": {"file": "x.tflite"}}}')
    with pytest.raises(ConfigError, match="cannot read model manifest"):
        resolve_model(model_dir=str(tmp_path))


def write_model_dir(directory: Path, models: dict[str, dict], default: str = DEFAULT) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "models.json").write_text(json.dumps({"default": default, "models": models}))
    return directory


def test_missing_model_file_names_the_hash_and_the_place(tmp_path):
    write_model_dir(tmp_path, {DEFAULT: DEFAULT_ENTRY})
    with pytest.raises(ModelNotFound, match=f"sha256 {DEFAULT_ENTRY['sha256']}.*{tmp_path}.*make model"):
        Embedder(model_dir=str(tmp_path))


def test_model_file_with_another_hash_is_refused(tmp_path):
    write_model_dir(tmp_path, {DEFAULT: DEFAULT_ENTRY})
    (tmp_path / DEFAULT_ENTRY["file"]).write_bytes(b"not the model")
    with pytest.raises(ChecksumMismatch, match=f"expected {DEFAULT_ENTRY['sha256']}"):
        Embedder(model_dir=str(tmp_path))


# -- a second model is a data change ------------------------------------------------------------


def test_second_manifest_entry_is_used_with_no_code_change(tmp_path, embedder, photos):
    # The same network under another name, declared to take inputs in [-1, 1]: a different
    # model as far as imgsim can tell, described only by data.
    shutil.copyfile(SHARED_MODEL, tmp_path / "second.tflite")
    write_model_dir(
        tmp_path,
        {
            DEFAULT: DEFAULT_ENTRY,
            "second": entry_with(file="second.tflite", input_range=[-1.0, 1.0], description="test model"),
        },
    )
    shutil.copyfile(SHARED_MODEL, tmp_path / DEFAULT_ENTRY["file"])
    second = Embedder(model="second", model_dir=str(tmp_path))
    assert second.model_name == "second" and second.model_path == tmp_path / "second.tflite"
    assert second.spec.input_range == (-1.0, 1.0)

    pixels = second.decode(photos[5].read_bytes()).pixels
    tensor = to_input_tensor(pixels, (224, 224), (-1.0, 1.0))
    assert tensor.min() < 0  # the declared range really reached preprocessing
    raw = run_model_directly(tmp_path / "second.tflite", tensor)
    expected = raw / np.linalg.norm(raw)
    np.testing.assert_allclose(second.embed_pixels([pixels])[0], expected, atol=1e-5)
    assert float(second.embed_pixels([pixels])[0] @ embedder.embed_pixels([pixels])[0]) < 0.9999

    # Selected by configuration too.
    assert embedder_configured_by({"IMGSIM_MODEL": "second", "IMGSIM_MODEL_DIR": str(tmp_path)}).model_name == "second"


def run_model_directly(model_path: Path, tensor: np.ndarray) -> np.ndarray:
    from imgsim.embedder import Interpreter  # the package imgsim uses (LiteRT)

    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[None])
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]


def test_wrong_output_dim_in_manifest_is_a_config_error(tmp_path):
    shutil.copyfile(SHARED_MODEL, tmp_path / DEFAULT_ENTRY["file"])
    write_model_dir(tmp_path, {DEFAULT: entry_with(output_dim=512)})
    with pytest.raises(ConfigError, match="outputs 1024-d vectors, but the manifest says output_dim 512"):
        Embedder(model_dir=str(tmp_path))


def test_wrong_input_size_in_manifest_is_a_config_error(tmp_path):
    shutil.copyfile(SHARED_MODEL, tmp_path / DEFAULT_ENTRY["file"])
    write_model_dir(tmp_path, {DEFAULT: entry_with(input_size=[192, 192])})
    with pytest.raises(ConfigError, match=r"input of shape \[1, 224, 224, 3\].*input_size 192x192"):
        Embedder(model_dir=str(tmp_path))


# -- model/fetch.py -----------------------------------------------------------------------------


def test_fetch_copies_from_model_mirror(fetch, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copyfile(SHARED_MODEL, mirror / DEFAULT_ENTRY["file"])
    monkeypatch.setenv("MODEL_MIRROR", str(mirror))
    dest = tmp_path / "dest"
    path = fetch.fetch(entry_with(urls=[DEAD_URL]), dest)
    assert path == dest / DEFAULT_ENTRY["file"]
    assert sha256_of(path) == DEFAULT_ENTRY["sha256"]


def test_fetch_falls_back_to_the_shared_folder(tmp_path, monkeypatch):
    module = load_fetch_module()
    monkeypatch.delenv("MODEL_MIRROR", raising=False)
    assert module.SHARED_MIRROR.resolve() == (SHARED_DIR / "models").resolve()
    path = module.fetch(entry_with(urls=[DEAD_URL]), tmp_path)
    assert sha256_of(path) == DEFAULT_ENTRY["sha256"]


def test_fetch_downloads_from_the_url_when_no_mirror_has_it(fetch, tmp_path):
    # file:// exercises the download path (urllib) without a network.
    path = fetch.fetch(entry_with(urls=[DEAD_URL, SHARED_MODEL.as_uri()]), tmp_path / "dest")
    assert sha256_of(path) == DEFAULT_ENTRY["sha256"]
    assert not list((tmp_path / "dest").glob("*.part"))  # no temporary left behind


def test_fetch_refuses_a_mirror_file_with_another_hash(fetch, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / DEFAULT_ENTRY["file"]).write_bytes(b"tampered")
    monkeypatch.setenv("MODEL_MIRROR", str(mirror))
    with pytest.raises(fetch.FetchError, match=f"{mirror / DEFAULT_ENTRY['file']}.*pinned {DEFAULT_ENTRY['sha256']}"):
        fetch.fetch(DEFAULT_ENTRY, tmp_path / "dest")
    assert not (tmp_path / "dest" / DEFAULT_ENTRY["file"]).exists()


def test_fetch_refuses_a_download_with_another_hash(fetch, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"something else")
    with pytest.raises(fetch.FetchError, match=f"pinned {DEFAULT_ENTRY['sha256']}"):
        fetch.fetch(entry_with(urls=[bad.as_uri()]), tmp_path / "dest")
    assert not list((tmp_path / "dest").iterdir())  # nothing unverified kept


def test_fetch_of_a_missing_file_names_the_hash_and_every_place_looked(fetch, tmp_path, monkeypatch):
    mirror = tmp_path / "empty-mirror"
    mirror.mkdir()
    monkeypatch.setenv("MODEL_MIRROR", str(mirror))
    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch(entry_with(urls=[DEAD_URL]), tmp_path / "dest")
    message = str(info.value)
    assert DEFAULT_ENTRY["sha256"] in message
    assert str(mirror / DEFAULT_ENTRY["file"]) in message
    assert str(fetch.SHARED_MIRROR / DEFAULT_ENTRY["file"]) in message
    assert DEAD_URL in message


def test_fetch_keeps_a_file_already_in_place(fetch, tmp_path):
    target = tmp_path / DEFAULT_ENTRY["file"]
    shutil.copyfile(SHARED_MODEL, target)
    os.utime(target, (1_000_000, 1_000_000))
    assert fetch.fetch(entry_with(urls=[DEAD_URL]), tmp_path) == target
    assert target.stat().st_mtime == 1_000_000  # not rewritten


def test_fetch_replaces_a_damaged_file_in_place(fetch, tmp_path):
    target = tmp_path / DEFAULT_ENTRY["file"]
    target.write_bytes(b"half a download")
    fetch.fetch(entry_with(urls=[SHARED_MODEL.as_uri()]), tmp_path)
    assert sha256_of(target) == DEFAULT_ENTRY["sha256"]


def test_fetch_command_line(tmp_path, capsys):
    module = load_fetch_module()
    assert module.main(["--dest", str(tmp_path)]) == 0
    assert sha256_of(tmp_path / DEFAULT_ENTRY["file"]) == DEFAULT_ENTRY["sha256"]
    assert (tmp_path / "models.json").is_file()  # the destination is a complete model dir
    assert Embedder(model_dir=str(tmp_path)).dim == 1024
    assert module.main(["--model", "nope", "--dest", str(tmp_path)]) == 1
    assert "'nope' is not in" in capsys.readouterr().err


def test_fetch_puts_the_named_models_in_a_folder_with_the_first_as_default(tmp_path):
    """What the layer build does with LAYER_MODELS (the template's Model first, then EXTRA_MODELS)."""
    import subprocess
    import sys

    manifest = json.loads(MANIFEST_PATH.read_text())
    entry = manifest["models"][manifest["default"]]
    source = tmp_path / "src"
    source.mkdir()
    (source / "models.json").write_text(json.dumps({"default": "a", "models": {"a": entry, "b": entry}}))
    dest = tmp_path / "layer-model"
    result = subprocess.run(
        [sys.executable, str(REPO_MODEL_DIR / "fetch.py"), "--manifest", str(source / "models.json"),
         "--dest", str(dest), "--model", "b", "--model", "a"],
        capture_output=True, text=True, check=False, env={**os.environ, "MODEL_MIRROR": str(REPO_MODEL_DIR)})
    assert result.returncode == 0, result.stderr
    copied = json.loads((dest / "models.json").read_text())
    assert copied["default"] == "b" and set(copied["models"]) == {"a", "b"}
    assert (dest / entry["file"]).is_file()
    unknown = subprocess.run([sys.executable, str(REPO_MODEL_DIR / "fetch.py"), "--manifest",
                              str(source / "models.json"), "--dest", str(dest), "--model", "c"],
                             capture_output=True, text=True, check=False)
    assert unknown.returncode == 1 and "'c' is not in" in unknown.stderr
