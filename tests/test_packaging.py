"""Packaging: the layer's requirements, the local invoke runner, the real `sam build` output for both
architectures (static checks: symbol versions, wheel tags, bytecode), and the x86_64 build run under
Lambda's Python 3.13 (Debian 13's CPython, `make lambda-python`) through the runner with the events in
events/ (S3 from a moto server, embedded Qdrant)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYER_SRC = REPO_ROOT / "layers" / "shared"
BIN = Path(sys.executable).parent
PHOTOS = (REPO_ROOT.parent / "shared" / "datasets" / "photos").resolve()
LAYER_LIMIT_BYTES = 250 * 1000 * 1000  # Lambda: function + all layers, unzipped (262,144,000 B; kept round)
LAYER_BUDGET_BYTES = 175 * 1000 * 1000  # the layer Makefile's guard (154 MB x86_64, 149 MB arm64 measured: README)
API_KEY = "local-dev-key"  # what events/*.json send in x-api-key

# SAM CLI's template providers (used by the runner) call deprecated samtranslator/jsonschema APIs.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from imgsim_tools import invoke

# ---------------------------------------------------------------- layer requirements (fast)


RUNTIME_PROVIDED = {"boto3"}  # the python3.13 runtime's own AWS SDK (layers/shared/prune.py)


def layer_requirements() -> dict[str, Requirement]:
    reqs = {}
    for line in (LAYER_SRC / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def test_layer_requirements_cover_every_runtime_dependency():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lambda_env = {"python_version": "3.13", "python_full_version": "3.13.0", "sys_platform": "linux",
                  "platform_system": "Linux", "implementation_name": "cpython"}
    layer = layer_requirements()
    checked = 0
    for spec in project["dependencies"]:
        dep = Requirement(spec)
        if dep.marker and not dep.marker.evaluate(lambda_env):
            continue
        if canonicalize_name(dep.name) in RUNTIME_PROVIDED:
            assert canonicalize_name(dep.name) not in layer, f"{dep.name} comes from the Lambda runtime, not the layer"
            continue
        checked += 1
        name = canonicalize_name(dep.name)
        assert name in layer, f"{dep.name} is a runtime dependency but not in layers/shared/requirements.txt"
        pinned = layer[name]
        (pin,) = pinned.specifier  # exactly one ==version pin per package
        assert pin.operator == "==", f"{pinned}: the layer pins exact versions"
        assert dep.specifier.contains(pin.version, prereleases=True), f"layer pin {pinned} violates {dep}"
        assert dep.extras <= pinned.extras, f"layer {pinned} lacks extras {dep.extras - pinned.extras}"
    assert checked >= 6


# ---------------------------------------------------------------- the runner, with a throwaway build


def write_fake_build(root: Path, handler_source: str, timeout: int = 5, extra_layer_files=None) -> Path:
    """A minimal `sam build` output: one function, one layer, a template with Globals and parameters."""
    build = root / "build"
    (build / "Fn").mkdir(parents=True)
    (build / "Layer" / "python" / "layerlib").mkdir(parents=True)
    (build / "Layer" / "data").mkdir()
    (build / "Layer" / "data" / "blob.txt").write_text("next to python/, as under /opt")
    (build / "Layer" / "python" / "layerlib" / "__init__.py").write_text(
        "from pathlib import Path\nDATA = (Path(__file__).resolve().parents[2] / 'data' / 'blob.txt').read_text()\n"
    )
    for rel, text in (extra_layer_files or {}).items():
        path = build / "Layer" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (build / "Fn" / "app.py").write_text(textwrap.dedent(handler_source))
    (build / "template.yaml").write_text(textwrap.dedent(f"""\
        AWSTemplateFormatVersion: "2010-09-09"
        Transform: AWS::Serverless-2016-10-31
        Parameters:
          Color:
            Type: String
            Default: blue
          Endpoint:
            Type: String
        Globals:
          Function:
            Runtime: python3.13
            Timeout: {timeout}
            MemorySize: 256
            Layers: [!Ref Layer]
            Environment:
              Variables:
                COLOR: !Ref Color
                ENDPOINT: !Ref Endpoint
                FROM_GLOBALS: "yes"
        Resources:
          Layer:
            Type: AWS::Serverless::LayerVersion
            Properties:
              ContentUri: Layer
              CompatibleRuntimes: [python3.13]
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: Fn
              Handler: app.handler
              Environment:
                Variables:
                  OWN: mine
        """))
    return build


def run_fake(build: Path, event: dict, tmp_path: Path, env_vars: dict | None = None, **kwargs):
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(event))
    env_path = None
    if env_vars is not None:
        env_path = tmp_path / "env.json"
        env_path.write_text(json.dumps(env_vars))
    return invoke.invoke("Fn", str(event_path), build_dir=str(build), env_vars_path=env_path and str(env_path),
                         capture=True, **kwargs)


PROBE_HANDLER = """\
    import os, sys, layerlib
    print("a log line on stdout")
    def handler(event, context):
        try:
            import pytest  # installed in the test venv, so it must NOT be importable here
            leaked = True
        except ImportError:
            leaked = False
        return {
            "event": event, "cwd": os.getcwd(), "path0": sys.path[0], "leaked": leaked, "flags": sys.flags.isolated,
            "python": list(sys.version_info[:2]), "path": sys.path,
            "layer_data": layerlib.DATA,
            "env": {k: os.environ.get(k) for k in ("COLOR", "ENDPOINT", "FROM_GLOBALS", "OWN", "EXTRA",
                    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "LAMBDA_TASK_ROOT", "_HANDLER")},
            "context": [context.function_name, context.memory_limit_in_mb, context.aws_request_id,
                        context.get_remaining_time_in_millis()],
        }
"""


def test_runner_lays_out_task_and_layer_like_lambda(tmp_path):
    build = write_fake_build(tmp_path, PROBE_HANDLER)
    result = run_fake(build, {"hello": "world"}, tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)  # stdout holds the result only; the handler's print went to stderr
    assert "a log line on stdout" in result.stderr and "REPORT RequestId:" in result.stderr
    task = str(build / "Fn")
    assert out["event"] == {"hello": "world"}
    assert out["cwd"] == task and out["path0"] == task
    assert out["leaked"] is False, "the runner's own site-packages must not be importable"
    assert out["flags"] == 1
    # The runtime's interpreter (Debian 13's CPython 3.13, not this venv's), then task, layer, the runtime's SDK.
    assert out["python"] == [3, 13]
    layer_python = str(build / "Layer" / "python")
    sdk = invoke._runtime_sdk_path()
    assert out["path"].index(task) < out["path"].index(layer_python) < out["path"].index(sdk)
    assert out["layer_data"] == "next to python/, as under /opt"
    assert out["env"] == {
        "COLOR": "blue", "ENDPOINT": "", "FROM_GLOBALS": "yes", "OWN": "mine", "EXTRA": None,
        "AWS_LAMBDA_FUNCTION_NAME": "Fn", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "LAMBDA_TASK_ROOT": task, "_HANDLER": "app.handler",
    }
    name, memory, request_id, remaining = out["context"]
    assert (name, memory) == ("Fn", "256") and len(request_id) == 36 and 0 < remaining <= 5000


def test_runner_env_overrides_like_sam_local(tmp_path):
    build = write_fake_build(tmp_path, PROBE_HANDLER)
    overrides = {"Parameters": {"COLOR": "green", "EXTRA": "not declared"}, "Fn": {"OWN": "override"}}
    result = run_fake(build, {}, tmp_path, env_vars=overrides, parameter_overrides={"Color": "red", "Endpoint": "x"})
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)["env"]
    # env-vars file beats template parameters; per-function beats "Parameters"; undeclared ones pass too.
    assert (env["COLOR"], env["ENDPOINT"], env["OWN"], env["EXTRA"]) == ("green", "x", "override", "not declared")


def test_runner_repeat_reuses_one_environment(tmp_path):
    build = write_fake_build(tmp_path, """\
        COUNT = {"n": 0}
        def handler(event, context):
            COUNT["n"] += 1
            return COUNT["n"]
        """)
    result = run_fake(build, {}, tmp_path, repeat=3)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 3
    reports = [line for line in result.stderr.splitlines() if line.startswith("REPORT")]
    assert len(reports) == 3 and "Init Duration" in reports[0] and "Init Duration" not in reports[1]


def test_runner_missing_dependency_fails(tmp_path):
    build = write_fake_build(tmp_path, """\
        import qdrant_client  # in the test venv, but not in this layer
        def handler(event, context):
            return "unreachable"
        """)
    result = run_fake(build, {}, tmp_path)
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["errorType"].startswith("Runtime.ImportModuleError")
    assert "qdrant_client" in error["errorMessage"]


def test_runner_handler_exception_exits_nonzero(tmp_path):
    build = write_fake_build(tmp_path, """\
        def handler(event, context):
            raise ValueError("bad event")
        """)
    result = run_fake(build, {}, tmp_path)
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "bad event")


def test_runner_kills_a_function_over_its_memory_size(tmp_path):
    """MemorySize is 256 MB in the fake build: a handler that touches 400 MB is killed, as Lambda kills it."""
    build = write_fake_build(tmp_path, """\
        def handler(event, context):
            blob = bytearray(400 * 1024 * 1024)  # zero-filled: every page is touched
            return len(blob)
        """)
    result = run_fake(build, {}, tmp_path)
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)
    assert error["errorType"] == "Runtime.OutOfMemory" and "signal: killed" in error["errorMessage"]
    assert "Memory Size: 256 MB" in result.stderr and "Runtime.OutOfMemory" in result.stderr
    # Within the limit: the same runner returns the result.
    ok = write_fake_build(tmp_path / "ok", """\
        def handler(event, context):
            return len(bytearray(32 * 1024 * 1024))
        """)
    assert json.loads(run_fake(ok, {}, tmp_path).stdout) == 32 * 1024 * 1024


def test_runner_enforces_the_function_timeout(tmp_path):
    build = write_fake_build(tmp_path, """\
        import time
        def handler(event, context):
            try:
                time.sleep(30)
            except Exception:
                return "swallowed"  # a timeout is not an Exception, as on Lambda
        """, timeout=1)
    started = time.monotonic()
    result = run_fake(build, {}, tmp_path)
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert "Task timed out after 1.00 seconds" in json.loads(result.stdout)["errorMessage"]


def test_runner_usage_errors_are_clear(tmp_path):
    build = write_fake_build(tmp_path, "def handler(e, c):\n    return 1\n")
    event = tmp_path / "e.json"
    event.write_text("{}")
    with pytest.raises(invoke.InvokeError, match="no function 'Nope'.*known: Fn"):
        invoke.build_spec("Nope", str(event), str(build))
    with pytest.raises(invoke.InvokeError, match="run `sam build`"):
        invoke.build_spec("Fn", str(event), str(tmp_path / "missing"))
    with pytest.raises(invoke.InvokeError, match="event file"):
        invoke.build_spec("Fn", str(tmp_path / "nope.json"), str(build))


# ---------------------------------------------------------------- the real build


def tool_env(**extra: str) -> dict[str, str]:
    """What `make build` gives `sam build`: Lambda's Python 3.13 on PATH (SAM builds python3.13 functions only
    with a python3.13 there) and as the interpreter that compiles the layer's bytecode."""
    env = dict(os.environ)
    lambda_python = invoke.lambda_python()
    env.update(SAM_CLI_TELEMETRY="0", BYTECODE_PYTHON=lambda_python,
               PATH=os.pathsep.join((str(Path(lambda_python).parent), str(BIN), env.get("PATH", ""))), **extra)
    return env


def build_with_sam(build_dir: Path, arch: str) -> Path:
    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "sam"), "build", "--build-dir", str(build_dir), "--template-file", str(REPO_ROOT / "template.yaml"),
         "--parameter-overrides", f"Architecture={arch}"],
        cwd=REPO_ROOT, env=tool_env(LAYER_ARCH=arch), capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    print(f"sam build ({arch}): {time.perf_counter() - started:.1f} s")
    size_line = re.search(rf"SharedLayer \({arch}\): .*", result.stdout + result.stderr)
    assert size_line, "the layer build reports its unzipped size"
    print(size_line.group(0))
    return build_dir


@pytest.fixture(scope="session")
def sam_build(tmp_path_factory) -> Path:
    """`sam build` of the real template for x86_64 (the build the runner executes), once per session."""
    return build_with_sam(tmp_path_factory.mktemp("sam") / "build", "x86_64")


@pytest.fixture(scope="session")
def sam_build_arm64(tmp_path_factory) -> Path:
    """The same for arm64: built and checked statically; nothing on this machine executes aarch64 code."""
    return build_with_sam(tmp_path_factory.mktemp("sam-arm64") / "build", "arm64")


# Template Architecture -> (wheel platform suffix, ELF e_machine).
ARCHITECTURES = {"x86_64": ("x86_64", 62), "arm64": ("aarch64", 183)}


@pytest.fixture(params=sorted(ARCHITECTURES))
def built(request) -> tuple[str, Path]:
    """(architecture, build directory) for each architecture the template offers."""
    return request.param, request.getfixturevalue("sam_build" if request.param == "x86_64" else "sam_build_arm64")


@pytest.fixture(scope="session")
def runtime_magic() -> bytes:
    """The bytecode magic number of the runtime's interpreter (CPython 3.13), asked of that interpreter."""
    code = "import importlib.util, sys; print(sys.implementation.cache_tag, importlib.util.MAGIC_NUMBER.hex())"
    out = subprocess.run([invoke.lambda_python(), "-I", "-S", "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "cpython-313", out
    return bytes.fromhex(out[1])


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def elf_machine(path: Path) -> int | None:
    header = path.read_bytes()[:20]
    return int.from_bytes(header[18:20], "little") if header[:4] == b"\x7fELF" else None


@pytest.mark.slow
def test_layer_layout(built, runtime_magic):
    arch, build = built
    layer = build / "SharedLayer"
    python = layer / "python"
    assert (python / "imgsim" / "__init__.py").is_file()
    assert (python / "imgsim" / "models.py").read_bytes() == (LAYER_SRC / "imgsim" / "models.py").read_bytes()
    assert any((python / "ai_edge_litert").glob("_pywrap_litert_interpreter_wrapper*.so"))
    assert not (python / "tflite_runtime").exists()
    numpy_version = re.search(r"^Version: (.+)$", next(python.glob("numpy-*.dist-info/METADATA")).read_text(), re.MULTILINE)
    assert int(numpy_version.group(1).split(".")[0]) == 2

    manifest = json.loads((layer / "model" / "models.json").read_text())
    entry = manifest["models"][manifest["default"]]
    model_file = layer / "model" / entry["file"]
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == entry["sha256"]

    size = tree_bytes(layer)
    code = tree_bytes(build / "IndexFunction") + tree_bytes(build / "SearchFunction")
    print(f"{arch} layer unzipped: {size / 1e6:.1f} MB; function code: {code / 1e3:.0f} kB")
    assert size < LAYER_BUDGET_BYTES and size + code < LAYER_LIMIT_BYTES

    stripped = [p for p in python.rglob("*") if p.name == "tests" or p.suffix in {".pyi", ".h"}]
    assert stripped == []
    # Bytecode ships, compiled by the runtime's Python (3.13: its cache tag and its magic number) with unchecked
    # hashes (zip timestamps do not matter); .pyc files are the same for both architectures.
    sources = [p for p in python.rglob("*.py")]
    compiled = {p.parent.parent / (p.name.split(".")[0] + ".py") for p in python.rglob("__pycache__/*.cpython-313.pyc")}
    assert sources and set(sources) <= compiled, sorted(set(sources) - compiled)[:5]
    assert not [p for p in python.rglob("*.pyc") if not p.name.endswith(".cpython-313.pyc")]
    wrong_magic = [p for p in python.rglob("*.pyc") if p.read_bytes()[:4] != runtime_magic]
    assert wrong_magic == [], wrong_magic[:5]
    pyc = next((python / "imgsim").glob("__pycache__/settings.cpython-313.pyc")).read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # PEP 552: hash-based, check_source off
    assert not (python / "bin").exists()
    # The embedded engine is for laptops and tests: deployed functions always use a Qdrant server.
    assert not list(python.glob("qdrant_edge*")), "qdrant-edge-py must not be in the Lambda layer"
    # Developer tooling (imgsim_tools: CLI, backfill, migrate, local stack, runner, event builders) stays out.
    assert not list(python.glob("imgsim_tools*"))
    assert not {"cli.py", "backfill.py", "migrate.py", "http_events.py"} & {p.name for p in (python / "imgsim").iterdir()}


def test_the_layer_package_never_imports_the_tooling():
    """imgsim (what the layer carries) must import without imgsim_tools: the dependency goes one way."""
    offenders = [str(path.relative_to(LAYER_SRC)) for path in (LAYER_SRC / "imgsim").rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+imgsim_tools", path.read_text(), re.MULTILINE)]
    assert offenders == []


LAMBDA_GLIBC = (2, 34)  # Amazon Linux 2023, the python3.13 runtime


@pytest.mark.slow
def test_layer_holds_lambda_platform_wheels(built):
    arch, build = built
    suffix, machine = ARCHITECTURES[arch]
    python = build / "SharedLayer" / "python"
    installed = {canonicalize_name(p.name.split("-")[0]): p for p in python.glob("*.dist-info")}
    for name in layer_requirements():
        assert name in installed, f"{name} from requirements.txt is missing in the built layer"
    for dist_info in installed.values():
        tags = re.findall(r"^Tag: (.+)$", (dist_info / "WHEEL").read_text(), re.MULTILINE)
        platforms = {tag.split("-")[2] for tag in tags}
        if platforms == {"any"}:
            continue
        assert any(p.endswith(f"_{suffix}") for p in platforms), (dist_info.name, tags)
        # Amazon Linux 2023 (python3.13 runtime) has glibc 2.34: nothing tagged for a newer one.
        glibc = [tuple(map(int, m)) for p in platforms for m in re.findall(r"manylinux_(\d+)_(\d+)", p)]
        legacy = any(p.startswith(("manylinux1", "manylinux2010", "manylinux2014")) for p in platforms)
        assert legacy or min(glibc) <= LAMBDA_GLIBC, (dist_info.name, tags)
        assert all("cp313" in t or "abi3" in t or "py3" in t for t in tags), (dist_info.name, tags)
    assert elf_machine(next((python / "numpy" / "_core").glob("_multiarray_umath*.so"))) == machine


def glibc_needed(shared_object: Path) -> tuple[int, int]:
    """The newest GLIBC symbol version an ELF file needs (readelf reads any architecture's files)."""
    readelf = shutil.which("readelf")
    assert readelf, "readelf missing: `make test` installs binutils"
    out = subprocess.run([readelf, "-V", "--wide", str(shared_object)], capture_output=True, text=True, check=True)
    versions = [tuple(map(int, v)) for v in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", out.stdout)]
    return max(versions, default=(0, 0))


@pytest.mark.slow
def test_every_native_library_in_the_layer_runs_on_lambdas_glibc(built):
    """Wheel tags can claim more than the binaries need; the symbol versions are what the loader checks. Both
    architectures: the arm64 layer is only checked, never run, here (README "Architectures")."""
    arch, build = built
    python = build / "SharedLayer" / "python"
    libraries = [p for p in python.rglob("*.so*") if p.is_file() and elf_machine(p) is not None]
    assert any("pi_heif" in str(p) for p in libraries) and any("libavif" in p.name for p in libraries)
    assert any(p.name.startswith("libLiteRt") for p in libraries)
    other_machine = [str(p.relative_to(python)) for p in libraries if elf_machine(p) != ARCHITECTURES[arch][1]]
    assert other_machine == [], f"{arch} layer holds binaries of another architecture"
    needs = {str(p.relative_to(python)): glibc_needed(p) for p in libraries}
    too_new = {name: version for name, version in needs.items() if version > LAMBDA_GLIBC}
    assert too_new == {}
    newest = max(needs.values())
    print(f"{arch}: {len(libraries)} shared objects, newest symbol version needed GLIBC_{newest[0]}.{newest[1]}: "
          + ", ".join(sorted(name for name, version in needs.items() if version == newest)))


@pytest.mark.slow
def test_functions_carry_only_their_handler_code(sam_build):
    for name, source in (("IndexFunction", "functions/index"), ("SearchFunction", "functions/search")):
        built = sorted(p.relative_to(sam_build / name).as_posix() for p in (sam_build / name).rglob("*") if p.is_file())
        expected = sorted(p.relative_to(REPO_ROOT / source).as_posix() for p in (REPO_ROOT / source).rglob("*")
                          if p.is_file() and "__pycache__" not in p.parts)
        assert built == expected


# ---------------------------------------------------------------- both functions, real events


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def s3_keys_of(event: dict) -> list[tuple[str, str]]:
    from urllib.parse import unquote_plus

    keys = []
    for record in event["Records"]:
        for s3_record in json.loads(record["body"])["Records"]:
            keys.append((s3_record["s3"]["bucket"]["name"], unquote_plus(s3_record["s3"]["object"]["key"])))
    return keys


@pytest.fixture(scope="module")
def moto_endpoint():
    """A moto S3 server for the module (its state is process-wide: a test under mock_aws() in between resets it)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def local_aws(moto_endpoint, tmp_path_factory):
    """The moto S3 server holding the objects events/index_put.json names (real photos), stocked for each test."""
    import boto3

    endpoint = moto_endpoint
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    put_event = json.loads((REPO_ROOT / "events" / "index_put.json").read_text())
    keys = s3_keys_of(put_event)
    for bucket, _ in keys:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    # The search event's body is photo_00000.jpg: the indexed object is that photo, so it must come first.
    for (bucket, key), photo in zip(keys, sorted(PHOTOS.glob("photo_*.jpg"))):
        s3.put_object(Bucket=bucket, Key=key, Body=photo.read_bytes(), ContentType="image/jpeg")
    env_file = tmp_path_factory.mktemp("invoke") / "env.json"
    env_file.write_text(json.dumps({"Parameters": {
        "AWS_ENDPOINT_URL": endpoint,
        "QDRANT_PATH": str(tmp_path_factory.mktemp("qdrant") / "db"),
        "QDRANT_API_KEY_PARAM": "",  # embedded Qdrant needs no key; nothing to read from SSM
        "IMGSIM_API_KEY_PARAM": "",
        "IMGSIM_API_KEY": API_KEY,
        "IMAGES_BUCKET": keys[0][0],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }}))
    return {"s3": s3, "env_file": env_file, "keys": keys, "endpoint": endpoint}


def phone_format_event(folder: Path, fmt: str, content_type: str) -> Path:
    """events/search.json with its query photo re-encoded as HEIC or AVIF."""
    import base64
    import io

    import pillow_heif
    from PIL import Image

    event = json.loads((REPO_ROOT / "events" / "search.json").read_text())
    img = Image.open(io.BytesIO(base64.b64decode(event["body"]))).convert("RGB")
    out = io.BytesIO()
    if fmt == "heic":
        pillow_heif.from_pillow(img).save(out, quality=90)
    else:
        img.save(out, "AVIF", quality=90)
    event["body"] = base64.b64encode(out.getvalue()).decode()
    event["headers"].update({"content-type": content_type, "content-length": str(len(out.getvalue()))})
    path = folder / f"search_{fmt}.json"
    path.write_text(json.dumps(event))
    return path


def run_function(sam_build: Path, function: str, event_name: str | Path, env_file: Path,
                 record: Path | None = None) -> tuple[dict, str]:
    completed = invoke.invoke(function, str(REPO_ROOT / "events" / event_name), build_dir=str(sam_build),
                              env_vars_path=str(env_file), capture=True, record_loaded=record and str(record))
    assert completed.returncode == 0, f"{function} {event_name}:\n{completed.stdout}\n{completed.stderr[-6000:]}"
    report = [line for line in completed.stderr.splitlines() if line.startswith("REPORT")]
    print(f"{function} {event_name}: {report[-1] if report else ''}")
    return json.loads(completed.stdout), completed.stderr


def api_body(response: dict) -> dict:
    body = response["body"]
    if response.get("isBase64Encoded"):
        import base64

        body = base64.b64decode(body)
    return json.loads(body)


# Large files in the layer no invocation here loads, each with the reason it ships (none at the moment: the
# HEIC and AVIF searches load the image decoders that only such files need).
LOADED_ON_DEMAND: dict[str, str] = {}
# Packages only Tracing=Active loads (imgsim.tracing): tracing is off under the runner, as under `sam local`
# (AWS_SAM_LOCAL); tests/test_tracing.py loads them through powertools' Tracer.
PACKAGES_ON_DEMAND = {"aws_xray_sdk", "wrapt"}


def unloaded_layer_parts(layer_python: Path, loaded: set[str]) -> tuple[list[str], list[str]]:
    """Top-level packages of the layer with no file loaded, and shared objects over 1 MB never mapped."""
    root = str(layer_python.resolve())
    used_tops = {Path(path).relative_to(root).parts[0] for path in loaded if path.startswith(root + os.sep)}
    tops = sorted(p.name for p in layer_python.iterdir()
                  if not p.name.endswith(".dist-info") and p.name != "__pycache__")
    on_demand = {p.resolve() for pattern in LOADED_ON_DEMAND for p in layer_python.glob(pattern)}
    big_unmapped = sorted(str(p.relative_to(layer_python)) for p in layer_python.rglob("*.so*")
                          if p.is_file() and p.stat().st_size > 1_000_000 and str(p.resolve()) not in loaded
                          and p.resolve() not in on_demand)
    return [top for top in tops if top not in used_tops | PACKAGES_ON_DEMAND], big_unmapped


@pytest.mark.slow
def test_both_functions_run_from_the_build_with_the_sample_events(sam_build, local_aws, tmp_path):
    """Every sample event through the built functions; the files they load prove the layer carries nothing else."""
    record = tmp_path / "loaded.txt"
    env_file = local_aws["env_file"]
    (bucket, key) = local_aws["keys"][0]

    def run(function: str, event_name: str | Path, env: Path = env_file) -> tuple[dict, str]:
        return run_function(sam_build, function, event_name, env, record)

    result, _ = run("IndexFunction", "index_put.json")
    assert result == {"batchItemFailures": []}

    health, _ = run("SearchFunction", "health.json")
    assert health["statusCode"] == 200, health
    assert api_body(health)["status"] == "ok" and "points" not in api_body(health)  # public: no count

    search, _ = run("SearchFunction", "search.json")
    assert search["statusCode"] == 200, search
    hits = api_body(search)["results"]
    assert hits[0]["key"] == key and hits[0]["percent"] >= 99.0, hits[0]

    by_key, _ = run("SearchFunction", "search_by_key.json")
    assert by_key["statusCode"] == 200, by_key

    # The same query photo as HEIC and as AVIF (events made here from the shared photo, not committed).
    for fmt, content_type in (("heic", "image/heic"), ("avif", "image/avif")):
        found, _ = run("SearchFunction", phone_format_event(tmp_path, fmt, content_type))
        assert found["statusCode"] == 200, found
        assert api_body(found)["results"][0]["key"] == key, fmt

    compare, _ = run("SearchFunction", "compare.json")
    assert compare["statusCode"] == 200, compare
    assert 0.0 <= api_body(compare)["score"] <= 1.0

    upload, _ = run("SearchFunction", "upload.json")
    assert upload["statusCode"] == 200, upload
    assert api_body(upload)["url"].startswith(local_aws["endpoint"])  # AWS_ENDPOINT_URL reached boto3

    # The delete notification arrives after the object is gone.
    local_aws["s3"].delete_object(Bucket=bucket, Key=key)
    result, _ = run("IndexFunction", "index_delete.json")
    assert result == {"batchItemFailures": []}
    gone, _ = run("SearchFunction", "search_by_key.json")
    assert gone["statusCode"] == 404 and api_body(gone)["error"]["code"] == "not_found", gone

    # The deployed store path: a Qdrant server's REST API (the stand-in), then one that does not answer.
    from qdrant_standin import QdrantStandin, running

    server_env = tmp_path / "server_env.json"
    overrides = json.loads(env_file.read_text())
    with running(QdrantStandin(api_key="qdrant-key")) as qdrant_url:
        overrides["Parameters"].update(QDRANT_URL=qdrant_url, QDRANT_API_KEY="qdrant-key", QDRANT_RETRIES="0")
        server_env.write_text(json.dumps(overrides))
        served, _ = run("SearchFunction", "health.json", server_env)
        assert served["statusCode"] == 200 and api_body(served)["status"] == "ok", served
    overrides["Parameters"].update(QDRANT_URL=f"http://127.0.0.1:{free_port()}")
    server_env.write_text(json.dumps(overrides))
    unreachable, _ = run("SearchFunction", "health.json", server_env)
    assert unreachable["statusCode"] == 503, unreachable

    loaded = set(record.read_text().split())
    layer_python = sam_build / "SharedLayer" / "python"
    assert any(path.endswith("imgsim/store/rest.py") for path in loaded)
    assert not any("/qdrant_client/" in path for path in loaded), "qdrant-client is a test tool, not in the layer"
    never_loaded, big_unmapped = unloaded_layer_parts(layer_python, loaded)
    assert never_loaded == [], "in the layer but loaded by no function: prune it (layers/shared/prune.py)"
    assert big_unmapped == [], "large shared objects no function loads"
    for pattern in LOADED_ON_DEMAND:
        assert list(layer_python.glob(pattern)), f"{pattern} is no longer in the layer: drop it from LOADED_ON_DEMAND"
    # The AWS SDK comes from the runtime (the runner's stand-in), not from the layer.
    assert not list(layer_python.glob("boto*")) and any("/botocore/" in path for path in loaded)


# ---------------------------------------------------------------- Lambda's Python 3.13, for real


EMBED_IN_THE_RUNTIME = """
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
import ai_edge_litert, boto3, numpy, pi_heif, PIL, imgsim
embedder = imgsim.Embedder(num_threads=1)
files = json.loads(sys.argv[2])
print(json.dumps({
    "version": list(sys.version_info[:2]), "stdlib": json.__file__,
    "origins": {m.__name__: m.__file__ for m in (ai_edge_litert, boto3, numpy, pi_heif, PIL, imgsim)},
    "versions": {"numpy": numpy.__version__, "PIL": PIL.__version__, "pi_heif": pi_heif.__version__,
                 "ai_edge_litert": ai_edge_litert.__version__},
    "vectors": {name: embedder.embed(open(path, "rb").read()).tolist() for name, path in files.items()},
}))
"""


@pytest.mark.slow
def test_built_functions_run_on_lambdas_python_313(sam_build, local_aws, tmp_path):
    """Issue 21: the built artifacts under a real CPython 3.13 (Debian 13's, `make lambda-python`), laid out as
    Lambda does (task, layer, then the runtime's AWS SDK in a folder of its own): the layer's imgsim embeds a JPEG,
    a HEIC and an AVIF as the developer environment does, and both functions answer a sample event."""
    import io

    import pillow_heif
    from imgsim import Embedder
    from PIL import Image

    layer_python = sam_build / "SharedLayer" / "python"
    sdk = invoke._runtime_sdk_path()
    root = Path(invoke.lambda_python_dir()).resolve()
    photo = min(PHOTOS.glob("photo_*.jpg"))
    picture = Image.open(photo).convert("RGB")
    files = {"jpeg": photo}
    for fmt in ("heic", "avif"):
        out = io.BytesIO()
        if fmt == "heic":
            pillow_heif.from_pillow(picture).save(out, quality=90)
        else:
            picture.save(out, "AVIF", quality=90)
        files[fmt] = tmp_path / f"photo.{fmt}"
        files[fmt].write_bytes(out.getvalue())

    # Run as Lambda runs it: isolated, no site-packages, nothing written, only what the build ships.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "en_US.UTF-8", "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [invoke.lambda_python(), "-I", "-S", "-B", "-c", EMBED_IN_THE_RUNTIME,
         json.dumps([str(sam_build / "SearchFunction"), str(layer_python), sdk]),
         json.dumps({name: str(path) for name, path in files.items()})],
        cwd=sam_build / "SearchFunction", env=env, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    lambda_side = json.loads(completed.stdout)
    print(f"Lambda's Python: {lambda_side['version']}, {lambda_side['versions']}")
    assert lambda_side["version"] == [3, 13]
    assert Path(lambda_side["stdlib"]).resolve().is_relative_to(root / "root" / "usr" / "lib" / "python3.13")
    origins = {name: Path(path).resolve() for name, path in lambda_side["origins"].items()}
    assert origins.pop("boto3").is_relative_to(Path(sdk).resolve())  # the runtime's SDK, not the layer's
    assert all(path.is_relative_to(layer_python.resolve()) for path in origins.values()), origins

    host = Embedder(num_threads=1)
    for name, path in files.items():
        lambda_vector = lambda_side["vectors"][name]
        host_vector = host.embed(path.read_bytes())
        cosine = float(sum(a * b for a, b in zip(lambda_vector, host_vector)))
        print(f"{name}: cosine(Lambda's Python 3.13 stack, developer stack) = {cosine:.6f}")
        assert cosine >= 0.9999, name

    # Both functions, through the runner (the same interpreter), on their own store and freshly put objects.
    for (bucket, key), picture_file in zip(local_aws["keys"], sorted(PHOTOS.glob("photo_*.jpg"))):
        local_aws["s3"].put_object(Bucket=bucket, Key=key, Body=picture_file.read_bytes(), ContentType="image/jpeg")
    overrides = json.loads(local_aws["env_file"].read_text())
    overrides["Parameters"]["QDRANT_PATH"] = str(tmp_path / "qdrant")
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps(overrides))
    record = tmp_path / "loaded.txt"
    indexed, _ = run_function(sam_build, "IndexFunction", "index_put.json", env_file, record)
    assert indexed == {"batchItemFailures": []}
    found, _ = run_function(sam_build, "SearchFunction", "search.json", env_file, record)
    assert found["statusCode"] == 200, found
    assert api_body(found)["results"][0]["key"] == local_aws["keys"][0][1]
    loaded = [Path(path) for path in record.read_text().split()]
    assert any(path.is_relative_to(root / "root" / "usr" / "lib" / "python3.13") for path in loaded)
    assert any("botocore" in path.parts and path.is_relative_to(Path(sdk).resolve()) for path in loaded)
    # Nothing from the developer environment except the embedded store that stands in for the Qdrant server (Lambda's
    # Python and the runtime's SDK are kept under .venv/ too, by `make lambda-python`: they are Lambda's side).
    developer = Path(sys.prefix).resolve()
    lambda_side = (root, Path(sdk).resolve())
    leaked = sorted({str(path) for path in loaded if path.is_relative_to(developer) and "qdrant_edge" not in path.parts
                     and not any(path.is_relative_to(side) for side in lambda_side)})
    assert leaked == []


# ---------------------------------------------------------------- deploy helpers


def test_put_secrets_stores_securestrings(monkeypatch, capsys):
    import boto3
    from imgsim_tools import put_secrets
    from moto import mock_aws

    monkeypatch.setenv("QDRANT_API_KEY", "qdrant-secret")
    monkeypatch.delenv("IMGSIM_API_KEY", raising=False)
    with mock_aws():
        assert put_secrets.main([]) == 0
        ssm = boto3.client("ssm", region_name="us-east-1")
        qdrant = ssm.get_parameter(Name="/imgsim/qdrant-api-key", WithDecryption=True)["Parameter"]
        api = ssm.get_parameter(Name="/imgsim/api-key", WithDecryption=True)["Parameter"]
    assert (qdrant["Type"], qdrant["Value"]) == ("SecureString", "qdrant-secret")
    assert api["Type"] == "SecureString" and len(api["Value"]) >= 32
    out = capsys.readouterr().out
    assert "qdrant-secret" not in out and api["Value"] in out  # the generated key is shown once


def test_setup_collection_creates_the_collection(monkeypatch, tmp_path, capsys):
    from imgsim_tools import setup_collection

    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("QDRANT_API_KEY_PARAM", raising=False)
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "qdrant"))
    monkeypatch.setenv("QDRANT_COLLECTION", "images")  # main() sets it from --collection; restored after
    assert setup_collection.main(["--collection", "setup_test"]) == 0
    out = capsys.readouterr().out
    assert "collection 'setup_test' ready on embedded" in out
    from imgsim.store.edge import shard_config_summary

    # The default model's collection behind the alias "setup_test" (imgsim.deployment).
    physical = json.loads((tmp_path / "qdrant" / "aliases.json").read_text())["setup_test"]
    assert physical == "setup_test__mobilenet_v3_small_075_224" and physical in out
    config = shard_config_summary(str(tmp_path / "qdrant" / physical))
    assert (config["vectors"][""]["size"], config["vectors"][""]["distance"]) == (1024, "Cosine")
    assert "scalar" in config["quantization_config"]  # IMGSIM_QUANTIZATION's default, int8
    assert (tmp_path / "qdrant" / f"{physical}_tombstones" / "edge_config.json").is_file()


def test_example_invoke_env_file_is_well_formed():
    overrides = invoke._load_env_overrides(str(REPO_ROOT / "infra" / "invoke.env.json"))
    assert set(overrides) == {"Parameters"}
    # Local runs read no secrets from SSM and point boto3 at the local S3 emulator.
    assert overrides["Parameters"]["QDRANT_API_KEY_PARAM"] == "" and overrides["Parameters"]["IMGSIM_API_KEY_PARAM"] == ""
    assert overrides["Parameters"]["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
