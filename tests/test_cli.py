"""The `imgsim` command line: in-process through main(argv), and as the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from imgsim.ids import point_id_for_file
from imgsim_tools import cli
from imgsim_tools.commands import embed, search
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTOS_DIR = (REPO_ROOT.parent / "shared" / "datasets" / "photos").resolve()

IMGSIM = REPO_ROOT / ".venv" / "bin" / "imgsim"
if not IMGSIM.exists():  # a venv elsewhere: the console script next to this interpreter
    IMGSIM = Path(sys.executable).with_name("imgsim")

CAT_PHOTOS = ["photo_00000.jpg", "photo_00001.jpg", "photo_00002.jpg"]
OTHER_PHOTOS = ["photo_01000.jpg", "photo_01001.jpg"]


@pytest.fixture(autouse=True)
def qdrant_env(monkeypatch, tmp_path):
    """Every test gets its own embedded Qdrant folder and no inherited Qdrant settings."""
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "qdrant"))
    for name in ("QDRANT_URL", "QDRANT_COLLECTION", "QDRANT_API_KEY", "QDRANT_API_KEY_PARAM"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "qdrant"


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """photos/: three cat photos, a text file, a hidden file, a PNG with alpha;
    photos/more/: two photos from another block and a truncated JPEG."""
    root = tmp_path / "photos"
    (root / "more").mkdir(parents=True)
    for name in CAT_PHOTOS:
        shutil.copy(PHOTOS_DIR / name, root / name)
    for name in OTHER_PHOTOS:
        shutil.copy(PHOTOS_DIR / name, root / "more" / name)
    (root / "notes.txt").write_text("not an image\n")
    (root / ".DS_Store").write_bytes(b"\x00\x01junk")
    rgba = Image.open(PHOTOS_DIR / OTHER_PHOTOS[0]).convert("RGBA")
    rgba.save(root / "more" / "cutout.png")
    data = (PHOTOS_DIR / "photo_01002.jpg").read_bytes()
    (root / "more" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_script(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(IMGSIM), *argv], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
        check=False,
    )


def search_json(capsys, image: Path, *extra: str) -> list[dict]:
    code, out, err = run(capsys, "search", str(image), "--json", *extra)
    assert code == 0, err
    return json.loads(out)["results"]


# -- embed --------------------------------------------------------------------------------------


def test_embed_prints_one_json_object_per_file(capsys, embedder):
    files = [PHOTOS_DIR / name for name in CAT_PHOTOS[:2]]
    code, out, err = run(capsys, "embed", *map(str, files))
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == [str(f) for f in files]
    for line, path in zip(lines, files):
        assert set(line) == {"file", "vector", "model"}
        assert line["model"] == embedder.model_name
        vector = np.asarray(line["vector"], dtype=np.float32)
        assert vector.shape == (embedder.dim,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        # The printed decimals read back to exactly the embedder's float32 values.
        np.testing.assert_array_equal(vector, embedder.embed(path.read_bytes()))
    assert err == ""


def test_vector_json_round_trips_float32_exactly():
    values = np.random.default_rng(7).standard_normal(1024).astype(np.float32)
    printed = json.loads(json.dumps(embed.vector_json(values)))
    np.testing.assert_array_equal(np.asarray(printed, dtype=np.float32), values)


def test_embed_reports_bad_files_and_exits_2(capsys, image_dir):
    good = image_dir / CAT_PHOTOS[0]
    code, out, err = run(capsys, "embed", str(image_dir / "notes.txt"), str(good), str(image_dir / "missing.jpg"))
    assert code == 2
    assert [json.loads(line)["file"] for line in out.splitlines()] == [str(good)]
    errors = err.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("imgsim: error: ") and "notes.txt" in errors[0] and "not an image" in errors[0]
    assert "missing.jpg: no such file" in errors[1]
    assert "Traceback" not in err


# -- index ---------------------------------------------------------------------------------------


def test_index_folder_recursively_with_payload(capsys, image_dir):
    code, out, err = run(capsys, "index", str(image_dir))
    assert code == 0, err
    # 3 cats + 2 others + the PNG; notes.txt and the truncated JPEG skipped; .DS_Store not looked at.
    assert out.startswith("indexed 6, skipped 2, failed 0 in ")
    assert out.rstrip().endswith("images/s)")
    warnings = err.splitlines()
    assert len(warnings) == 2 and all(w.startswith("imgsim: warning: skipped ") for w in warnings)
    assert any("notes.txt" in w for w in warnings) and any("truncated.jpg" in w for w in warnings)
    assert ".DS_Store" not in err
    assert "%|" not in err  # no progress bar when stderr is not a terminal

    query = image_dir / CAT_PHOTOS[0]
    results = search_json(capsys, query, "--limit", "50")
    assert len(results) == 6
    by_key = {r["key"]: r for r in results}
    png = by_key[str((image_dir / "more" / "cutout.png").resolve())]
    assert png["content_type"] == "image/png" and png["format"] == "PNG"
    top = results[0]
    assert top["key"] == str(query.resolve())
    assert top["id"] == point_id_for_file(query)
    assert top["score"] == pytest.approx(1.0, abs=1e-5) and top["percent"] == 100.0
    with Image.open(query) as img:
        assert (top["width"], top["height"]) == img.size
    assert top["size"] == query.stat().st_size
    assert top["source"] == "file" and top["content_type"] == "image/jpeg"
    assert top["model"]
    indexed_at = datetime.fromisoformat(top["indexed_at"])
    assert indexed_at.tzinfo is not None and indexed_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - indexed_at).total_seconds()) < 600
    assert all("dirs" not in r for r in results)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_index_again_is_idempotent(capsys, monkeypatch, image_dir, qdrant_env, embedder):
    assert run(capsys, "index", str(image_dir))[0] == 0
    first = {r["id"]: r for r in search_json(capsys, image_dir / CAT_PHOTOS[0], "--limit", "50")}
    # Also naming a file inside the folder again, by a relative path: still one point per file.
    monkeypatch.chdir(image_dir)
    code, out, _ = run(capsys, "index", ".", CAT_PHOTOS[1])
    assert code == 0 and out.startswith("indexed 6, skipped 2, failed 0")
    second = {r["id"]: r for r in search_json(capsys, image_dir / CAT_PHOTOS[0], "--limit", "50")}
    assert set(second) == set(first)
    assert {r["key"] for r in second.values()} == {r["key"] for r in first.values()}

    from imgsim.deployment import open_model_store
    from imgsim.settings import Settings

    store = open_model_store(Settings(qdrant_path=str(qdrant_env)), dim=embedder.dim, model=embedder.model_name)
    try:
        assert store.count() == 6
    finally:
        store.close()


def test_index_single_files_and_missing_path(capsys, image_dir):
    code, out, err = run(capsys, "index", str(image_dir / CAT_PHOTOS[0]), str(image_dir / "nope"))
    assert code == 2
    assert out == ""  # nothing indexed before the bad path was reported
    assert err.strip() == f"imgsim: error: {image_dir / 'nope'}: no such file or directory"
    code, out, _ = run(capsys, "index", str(image_dir / CAT_PHOTOS[0]), str(image_dir / "more" / OTHER_PHOTOS[0]))
    assert code == 0 and out.startswith("indexed 2, skipped 0, failed 0")


def test_index_unreadable_file_is_failed_and_exit_1(capsys, image_dir):
    (image_dir / "dangling.jpg").symlink_to(image_dir / "gone.jpg")
    code, out, err = run(capsys, "index", str(image_dir))
    assert code == 1
    assert out.startswith("indexed 6, skipped 2, failed 1")
    assert f"imgsim: warning: failed {image_dir / 'dangling.jpg'}: no such file" in err


def test_index_shows_progress_bar_on_a_terminal(capsys, monkeypatch, image_dir):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run(capsys, "index", "--batch-size", "2", str(image_dir))
    assert code == 0
    assert "0/8 [" in err and "img/s" in err  # the bar counts every file, skipped ones too
    assert out.startswith("indexed 6, skipped 2, failed 0")  # the summary stays on stdout


def test_ctrl_c_during_index_prints_partial_summary(capsys, monkeypatch, image_dir, qdrant_env, embedder):
    from imgsim.embedder import Embedder

    real = Embedder.embed_decoded
    calls = {"n": 0}

    def interrupted_on_second_batch(self, images):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, images)

    monkeypatch.setattr(Embedder, "embed_decoded", interrupted_on_second_batch)
    code, out, _ = run(capsys, "index", "--batch-size", "2", *(str(image_dir / n) for n in CAT_PHOTOS))
    assert code == 130
    assert out.startswith("interrupted: indexed 2, skipped 0, failed 0")

    from imgsim.deployment import open_model_store
    from imgsim.settings import Settings

    store = open_model_store(Settings(qdrant_path=str(qdrant_env)), dim=embedder.dim, model=embedder.model_name)
    try:
        assert store.count() == 2  # the first batch was stored and the store closed cleanly
    finally:
        store.close()


# -- search -----------------------------------------------------------------------------------------


def test_search_table_limit_min_score_and_prefix(capsys, image_dir):
    assert run(capsys, "index", str(image_dir))[0] == 0
    query = image_dir / CAT_PHOTOS[0]
    code, out, err = run(capsys, "search", str(query), "--limit", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "similar", "score", "key"]
    assert len(lines) == 4
    assert lines[1].split() == ["1", "100.0%", "1.0000", str(query.resolve())]

    everything = search_json(capsys, query, "--limit", "50")
    threshold = everything[2]["score"] - 1e-6
    above = search_json(capsys, query, "--limit", "50", "--min-score", f"{threshold}")
    assert [r["id"] for r in above] == [r["id"] for r in everything if r["score"] >= threshold]
    assert len(above) >= 3

    folder = str((image_dir / "more").resolve()) + "/"
    in_folder = search_json(capsys, query, "--prefix", folder)
    assert len(in_folder) == 3 and all(r["key"].startswith(folder) for r in in_folder)
    # A prefix that ends inside a file name also works.
    partial = search_json(capsys, query, "--prefix", folder + "photo_0100")
    assert sorted(Path(r["key"]).name for r in partial) == sorted(OTHER_PHOTOS)


def test_search_empty_index_is_not_an_error(capsys):
    code, out, err = run(capsys, "search", str(PHOTOS_DIR / CAT_PHOTOS[0]))
    assert (code, out.strip(), err) == (0, "no images indexed", "")
    code, out, err = run(capsys, "search", str(PHOTOS_DIR / CAT_PHOTOS[0]), "--json")
    assert code == 0 and json.loads(out) == {"results": []} and "no images indexed" in err


def test_search_with_a_box_searches_with_that_region(capsys, image_dir, tmp_path):
    """Two photos side by side in one picture (wider than the 448 px the decoder reduces to): a box around either
    finds that photo, at 100 %, since the region is cut at the file's resolution before any reduction."""
    assert run(capsys, "index", str(image_dir))[0] == 0
    left, right = Image.open(image_dir / CAT_PHOTOS[0]), Image.open(image_dir / "more" / OTHER_PHOTOS[1])
    width, height = left.width + right.width, max(left.height, right.height)
    pair = Image.new("RGB", (width, height), (128, 128, 128))
    pair.paste(left.convert("RGB"), (0, 0))
    pair.paste(right.convert("RGB"), (left.width, 0))
    pair.save(tmp_path / "pair.png")
    assert width > 448
    boxes = {CAT_PHOTOS[0]: (0, 0, left.width / width, left.height / height),
             OTHER_PHOTOS[1]: (left.width / width, 0, right.width / width, right.height / height)}
    for name, box in boxes.items():
        results = search_json(capsys, tmp_path / "pair.png", "--box", ",".join(f"{v:.6f}" for v in box), "--limit", "2")
        assert Path(results[0]["key"]).name == name and results[0]["percent"] == 100.0, results
    code, out, err = run(capsys, "search", str(tmp_path / "pair.png"), "--box", "0.5,0.5,0.6,0.5")
    assert code == 2 and out == "" and "runs past the image's right edge: x + w = 1.1 > 1" in err
    code, _, err = run(capsys, "search", str(tmp_path / "pair.png"), "--box", "10,10,200,100")
    assert code == 2 and "not pixels" in err


@pytest.mark.parametrize("name, message", [("notes.txt", "not an image"), ("missing.jpg", "no such file")])
def test_search_bad_image_exits_2(capsys, image_dir, name, message):
    code, out, err = run(capsys, "search", str(image_dir / name))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("imgsim: error: ") and message in err


def test_global_options_before_or_after_the_command(capsys, image_dir, tmp_path):
    other = tmp_path / "other-store"
    code, _, err = run(capsys, "--qdrant-path", str(other), "--collection", "pics", "index", str(image_dir / CAT_PHOTOS[0]))
    assert code == 0, err
    # The model's own collection behind the alias "pics" (imgsim.deployment).
    (physical,) = json.loads((other / "aliases.json").read_text()).values()
    assert physical.startswith("pics__") and (other / physical / "edge_config.json").is_file()
    # The same store and collection, options given after the command this time.
    results = search_json(capsys, image_dir / CAT_PHOTOS[1], "--qdrant-path", str(other), "--collection", "pics")
    assert [r["key"] for r in results] == [str((image_dir / CAT_PHOTOS[0]).resolve())]
    # The default store (QDRANT_PATH) and collection are untouched.
    assert run(capsys, "search", str(image_dir / CAT_PHOTOS[1]))[1].strip() == "no images indexed"
    code, _, err = run(capsys, "--qdrant-url", "http://localhost:6333", "--qdrant-path", str(other), "search", "x.jpg")
    assert code == 2 and "not both" in err


# -- compare ------------------------------------------------------------------------------------------


def test_compare_two_images(capsys, embedder):
    a, b = PHOTOS_DIR / CAT_PHOTOS[0], PHOTOS_DIR / OTHER_PHOTOS[0]
    code, out, err = run(capsys, "compare", str(a), str(a))
    assert (code, out.strip()) == (0, "100.0% similar (score 1.0000)"), err
    code, out, _ = run(capsys, "compare", str(a), str(b), "--json")
    result = json.loads(out)
    expected = float(np.dot(embedder.embed(a.read_bytes()), embedder.embed(b.read_bytes())))
    assert result["score"] == pytest.approx(max(0.0, expected), abs=1e-6)
    assert result["percent"] == round(100 * result["score"], 1)
    assert (result["a"], result["b"], result["model"]) == (str(a), str(b), embedder.model_name)
    code, out, err = run(capsys, "compare", str(a), str(PHOTOS_DIR / "nope.jpg"))
    assert code == 2 and "nope.jpg: no such file" in err


# -- failures: exit 1, one line, traceback only with -v ----------------------------------------------------


def test_collection_with_another_dimension_exits_1(capsys, qdrant_env, image_dir):
    from imgsim.settings import Settings
    from imgsim.store import open_store

    store = open_store(Settings(qdrant_path=str(qdrant_env)), dim=8)
    store.ensure_collection()
    store.close()
    code, out, err = run(capsys, "index", str(image_dir))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("imgsim: error: collection 'images' has vectors of size 8")
    code, _, err = run(capsys, "-v", "search", str(image_dir / CAT_PHOTOS[0]))
    assert code == 1 and "Traceback" in err and "CollectionMismatch" in err


def test_unreachable_qdrant_server_exits_1(capsys, monkeypatch, image_dir):
    monkeypatch.setenv("QDRANT_RETRIES", "0")
    monkeypatch.setenv("QDRANT_TIMEOUT", "1")
    # Port 9 (discard) on localhost: nothing listens, the connection is refused at once.
    code, out, err = run(capsys, "--qdrant-url", "http://127.0.0.1:9", "index", str(image_dir))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("imgsim: error: Qdrant get_aliases failed after 1 attempt(s)")  # the first call: the alias


def test_store_failure_during_index_stops_with_partial_summary(capsys, monkeypatch, image_dir):
    from imgsim.errors import StoreUnavailable
    from imgsim.store import VectorStore
    from imgsim.store.base import COMPANION_SUFFIXES

    real = VectorStore.upsert
    calls = {"n": 0}

    def fails_on_second_write(self, points, **kwargs):
        if not self.collection.endswith(COMPANION_SUFFIXES):  # the images' writes, not their signatures'
            calls["n"] += 1
            if calls["n"] == 2:
                raise StoreUnavailable("Qdrant upsert failed after 4 attempts: timed out")
        return real(self, points, **kwargs)

    monkeypatch.setattr(VectorStore, "upsert", fails_on_second_write)
    files = [str(image_dir / n) for n in CAT_PHOTOS] + [str(image_dir / "more" / n) for n in OTHER_PHOTOS]
    code, out, err = run(capsys, "index", "--batch-size", "2", *files)
    assert code == 1
    assert out.startswith("stopped: indexed 2, skipped 0, failed 0")
    assert err == "imgsim: error: Qdrant upsert failed after 4 attempts: timed out\n"


def test_missing_model_exits_1(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("IMGSIM_MODEL_DIR", str(tmp_path / "no-model"))
    code, _, err = run(capsys, "compare", str(PHOTOS_DIR / CAT_PHOTOS[0]), str(PHOTOS_DIR / CAT_PHOTOS[1]))
    assert code == 1 and err.startswith("imgsim: error: no models.json found in") and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    assert run(capsys)[0] == 2
    code, _, err = run(capsys, "search", "a.jpg", "--limit", "0")
    assert code == 2 and "must be at least 1" in err
    assert run(capsys, "search", "a.jpg", "--min-score", "1.5")[0] == 2
    code, _, err = run(capsys, "embed", "--bogus", "a.jpg")
    assert code == 2 and "unrecognized arguments: --bogus" in err
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(c in out for c in ("embed", "index", "search", "compare", "backfill", "serve"))


# -- delegated commands -----------------------------------------------------------------------------------


def test_serve_and_backfill_help(capsys):
    code, out, _ = run(capsys, "serve", "--help")
    assert code == 0 and out.startswith("usage: imgsim serve") and "--port" in out and "--qdrant-path" in out
    code, out, _ = run(capsys, "backfill", "--help")
    assert code == 0 and out.startswith("usage: imgsim backfill") and "--collection" in out


def test_serve_without_a_checkout_exits_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("IMGSIM_PROJECT_DIR", str(tmp_path))
    code, out, err = run(capsys, "serve")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "not an imgsim checkout" in err and str(tmp_path) in err


def test_serve_runs_local_stack_with_global_options(capsys, monkeypatch, tmp_path):
    """A command gets the global options, given before or after it, in its arguments and its session's settings;
    the environment is read, never written."""
    import types

    fake = types.ModuleType("fake_local_stack")
    exec(  # noqa: S102 - a stand-in module for the command
        '"""Fake local stack."""\n'
        "import json, os\n"
        "def add_arguments(parser):\n"
        "    parser.add_argument('--port', type=int, default=3000)\n"
        "def run(args, session):\n"
        "    print(json.dumps({'port': args.port, 'collection': args.collection, 'verbose': args.verbose,\n"
        "                      'settings': [session.settings.collection, session.settings.qdrant_path],\n"
        "                      'overrides': dict(session.overrides), 'env': os.environ['QDRANT_COLLECTION']}))\n"
        "    return 7\n", fake.__dict__,
    )
    real_load = cli.commands.load
    monkeypatch.setattr(cli.commands, "load", lambda name: fake if name == "serve" else real_load(name))
    monkeypatch.setenv("QDRANT_COLLECTION", "before")
    code, out, _ = run(capsys, "--collection", "pics", "serve", "--port", "8080", "-v", "--qdrant-path", "/tmp/q")
    assert code == 7
    assert json.loads(out) == {
        "port": 8080, "collection": "pics", "verbose": True, "settings": ["pics", "/tmp/q"],
        "overrides": {"QDRANT_COLLECTION": "pics", "QDRANT_PATH": "/tmp/q"}, "env": "before",
    }


def test_project_root_is_the_checkout(monkeypatch):
    from imgsim_tools.project import project_root, template_path

    monkeypatch.delenv("IMGSIM_PROJECT_DIR", raising=False)
    root = Path(__file__).resolve().parents[1]
    assert project_root() == root
    assert template_path(root).name == "template.yaml" and template_path(root).is_file()


# -- the installed console script -----------------------------------------------------------------------------


def test_script_version_and_delegated_help():
    result = run_script("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"imgsim {cli._version()}"
    for command in ("serve", "backfill"):
        result = run_script(command, "--help")
        assert result.returncode == 0 and result.stdout.startswith(f"usage: imgsim {command}"), result.stderr


def test_script_index_search_compare(tmp_path, image_dir):
    env = {"QDRANT_PATH": str(tmp_path / "script-store")}
    result = run_script("index", str(image_dir), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("indexed 6, skipped 2, failed 0")
    # stderr carries only our warnings (TFLite's own INFO line is kept out of it).
    assert [line.split(": ")[1] for line in result.stderr.splitlines()] == ["warning", "warning"]

    result = run_script("search", str(image_dir / CAT_PHOTOS[0]), "--json", "--limit", "2", env=env)
    assert result.returncode == 0 and result.stderr == ""
    results = json.loads(result.stdout)["results"]
    assert next(r["key"] for r in results) == str((image_dir / CAT_PHOTOS[0]).resolve()) and len(results) == 2

    result = run_script("compare", str(image_dir / "notes.txt"), str(image_dir / CAT_PHOTOS[0]), env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "not an image" in result.stderr

    result = run_script("search", env=env)
    assert result.returncode == 2 and "the following arguments are required: IMAGE" in result.stderr


def test_script_ctrl_c_exits_130_after_partial_summary(tmp_path):
    # ~17k inputs (each photo linked 10 times): indexing them all takes ~30 s, so the SIGINT sent
    # once "batch 2" is logged always lands mid-run, however late this process reads the log.
    inputs = tmp_path / "many"
    for copy in range(10):
        folder = inputs / f"copy{copy}"
        folder.mkdir(parents=True)
        for photo in sorted(PHOTOS_DIR.glob("*.jpg")):
            (folder / photo.name).symlink_to(photo)
    env = {**os.environ, "QDRANT_PATH": str(tmp_path / "sigint-store")}
    proc = subprocess.Popen(
        [str(IMGSIM), "-v", "index", "--batch-size", "8", str(inputs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A suite started as a background job inherits SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler: give the child the default disposition, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - one call, before exec
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # -v logs each stored batch
            if "batch 2:" in line:
                proc.send_signal(signal.SIGINT)
                break
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert out.startswith("interrupted: indexed ")
    indexed = int(out.split()[2].rstrip(","))
    assert 16 <= indexed < 16_920


def test_display_key_for_files_and_s3_objects():
    assert search.display_key({"key": "/home/me/cat.jpg", "source": "file"}, "id") == "/home/me/cat.jpg"
    assert search.display_key({"key": "photos/cat.jpg", "bucket": "imgsim-images", "source": "s3"}, "id") == (
        "s3://imgsim-images/photos/cat.jpg"
    )
    assert search.display_key({}, "the-id") == "the-id"


def test_heic_and_avif_files_are_indexed_and_searchable(capsys, qdrant_env, tmp_path):
    """The CLI decodes what phones write: an iPhone export folder is indexed, and searched by its HEIC."""
    import pillow_heif

    folder = tmp_path / "iphone"
    folder.mkdir()
    photo = Image.open(PHOTOS_DIR / CAT_PHOTOS[0]).convert("RGB")
    pillow_heif.from_pillow(photo).save(folder / "IMG_0001.HEIC", quality=90)
    Image.open(PHOTOS_DIR / OTHER_PHOTOS[0]).convert("RGB").save(folder / "IMG_0002.avif", quality=90)
    code, out, err = run(capsys, "index", str(folder))
    assert code == 0 and out.startswith("indexed 2, skipped 0, failed 0"), (out, err)
    results = search_json(capsys, folder / "IMG_0001.HEIC", "--limit", "1")
    assert results[0]["key"].endswith("IMG_0001.HEIC") and results[0]["format"] == "HEIF"
    assert results[0]["content_type"] == "image/heic" and results[0]["percent"] >= 99.0
