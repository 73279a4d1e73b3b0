#!/usr/bin/env python3
"""Run a function from the ``sam build`` output the way Lambda lays it out, without Docker.

    imgsim-invoke IndexFunction events/index_put.json [more events...] [--env-vars env.json] [--repeat 3]
    make invoke FN=IndexFunction EVENT=events/index_put.json [ENV=env.json]

What it reproduces (this is the point: it proves the packaging):

* the function's directory in ``.aws-sam/build`` is ``/var/task``: the working directory and first on
  ``sys.path``;
* each layer's ``python/`` (and ``python/lib/python3.13/site-packages``) is on ``sys.path`` as
  ``/opt/python`` would be, and the layer's other files stay beside it as under ``/opt`` (imgsim finds
  ``<layer>/model`` by itself);
* the runtime's interpreter: a real CPython 3.13 (Debian 13's, ``make lambda-python``), not this
  process's Python, so the layer's cp313 wheels and its 3.13 bytecode are what runs; after the layers
  comes the runtime's AWS SDK (boto3 and its dependencies, compiled by 3.13), as Lambda supplies its own;
* nothing else is importable: the handler runs in a fresh ``python3.13 -I -S -B`` process (no bytecode
  written: Lambda's code directories are read-only) whose ``sys.path`` is
  the standard library + task + layers + the runtime's SDK, so a dependency missing from the layer fails here;
* the environment is the function's, from the built template (Globals merged, parameters and
  intrinsics resolved by SAM CLI's own providers, as ``sam local invoke`` does), plus the AWS_* and
  AWS_LAMBDA_* variables Lambda sets; a Lambda context object; the function's Timeout is enforced.

Overrides follow ``sam local invoke --env-vars``: ``{"IndexFunction": {...}}`` for one function,
``{"Parameters": {...}}`` for all. Unlike SAM, variables the template does not declare are passed too
(e.g. AWS_ENDPOINT_URL, QDRANT_PATH), so a local emulator can be targeted. Template parameters can be
set with ``--parameter-overrides Key=Value ...``; a parameter with no default and no override resolves
to an empty string (QdrantUrl empty = embedded Qdrant at QDRANT_PATH).

Several event files (and ``--repeat``) invoke the handler in turn in the same environment, like warm
invocations: the first pays the cold start. The last return value is printed to stdout as JSON; the
handler's logs go to stderr, with a Lambda-style REPORT line per invocation (init and invoke durations,
max memory). Exit status 1 if the handler raised
(the Lambda error document is printed instead), 2 for a usage or packaging error.

The child half of this file (``--child``) must use the standard library only: it runs before the
task and layer directories are on the path.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

PYTHON_VERSION = "3.13"
CHILD_FLAG = "--child"
# What `make lambda-python` installs, under the project's .venv: the interpreter (bin/python3.13, a wrapper that
# runs Debian 13's CPython with its own loader and libraries) and the runtime's AWS SDK (runtime-sdk/).
LAMBDA_PYTHON_DIR = os.path.join(".venv", f"lambda-python{PYTHON_VERSION}")


# ----------------------------------------------------------------------------- child (stdlib only)


def _lambda_emulation():
    """``lambda_emulation.py`` beside this file, the context shared with ``imgsim serve`` and the tests.
    Loaded from this package's folder by path: the child runs under ``-I -S``, so no package is importable."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lambda_emulation.py")
    spec = importlib.util.spec_from_file_location("_imgsim_lambda_emulation", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _TimedOut(BaseException):
    """BaseException so a handler's `except Exception` cannot swallow the timeout, as on Lambda."""


def _error_document(exc: BaseException) -> dict:
    import traceback

    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
    }


def _peak_rss_mb() -> float:
    """This process image's peak resident memory (VmHWM). Not ``ru_maxrss``: after fork + exec that still
    holds the parent's peak (1.1 GB when the runner is started from the test suite)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _out_of_memory(request_id: str) -> dict:
    # What Lambda reports when it kills an environment over its MemorySize.
    return {"errorType": "Runtime.OutOfMemory",
            "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
            "requestId": request_id, "stackTrace": []}


def _watch_memory(limit_mb: int, request: dict, write_result) -> None:
    """Kill this process, as Lambda kills an environment, once its resident memory passes MemorySize
    (unless the invocation's own result was written first: ``write_result`` writes one result only).

    Sampled every 5 ms from /proc/self/statm (a limit on address space would count the model's mapping and
    numpy's reservations, which Lambda does not); a spike between two samples is still caught afterwards
    from the process's peak RSS (VmHWM)."""
    import threading

    page = os.sysconf("SC_PAGE_SIZE")
    limit = limit_mb * 1024 * 1024

    def loop() -> None:
        while True:
            with open("/proc/self/statm") as fh:
                rss = int(fh.read().split()[1]) * page
            if rss > limit:
                print(f"REPORT RequestId: {request['id']}\tMemory Size: {limit_mb} MB\tMax Memory Used: "
                      f"{rss // (1024 * 1024)} MB\tStatus: error\tError Type: Runtime.OutOfMemory",
                      file=sys.stderr, flush=True)
                if write_result(_out_of_memory(request["id"])):
                    os._exit(1)
                return
            time.sleep(0.005)

    threading.Thread(target=loop, name="memory-watch", daemon=True).start()


def child_main(spec_path: str) -> int:
    import importlib
    import signal
    import uuid

    running = "{}.{}".format(*sys.version_info[:2])
    if running != PYTHON_VERSION:
        print(f"invoke: the child runs Python {running}; the functions' runtime is python{PYTHON_VERSION}", file=sys.stderr)
        return 2
    with open(spec_path) as fh:
        spec = json.load(fh)
    emulation = _lambda_emulation()
    # Keep the real stdout for the result; everything the handler prints or logs goes to stderr
    # (on Lambda both end up in CloudWatch Logs; here stdout is reserved for the result, like sam local).
    result_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import threading

    # One result per process: the memory watcher and the invocation can both reach for it (an allocation in C
    # holds the GIL past the watcher's sample, then both see the peak); whoever comes first writes it.
    written = threading.Lock()

    def write_result(outcome: object) -> bool:
        if not written.acquire(blocking=False):
            return False
        with os.fdopen(os.dup(result_fd), "w") as out:
            json.dump(outcome, out, default=str)
            out.write("\n")
        return True

    current = {"id": ""}
    _watch_memory(int(spec["memory"]), current, write_result)

    os.chdir(spec["task_dir"])
    sys.path[:0] = spec["sys_path"]
    module_name, _, function_name = spec["handler"].rpartition(".")

    def on_alarm(signum, frame):
        raise _TimedOut(f"Task timed out after {spec['timeout']:.2f} seconds")

    signal.signal(signal.SIGALRM, on_alarm)
    outcome: object = None
    status = 0
    started = time.perf_counter()
    try:
        module = importlib.import_module(module_name)
        handler = getattr(module, function_name)
    except Exception as exc:  # noqa: BLE001 - an import error here is exactly what this runner exists to catch
        outcome, status = {**_error_document(exc), "errorType": f"Runtime.ImportModuleError: {type(exc).__name__}"}, 1
        handler = None
    init_ms = (time.perf_counter() - started) * 1000
    events = []
    for path in spec["event_paths"]:
        with open(path) as fh:
            events.append(json.load(fh))
    for attempt, event in enumerate(events * spec["repeat"] if handler else []):
        request_id = str(uuid.uuid4())
        current["id"] = request_id
        context = emulation.LambdaContext(spec["function_name"], timeout_s=float(spec["timeout"]),
                                          memory_mb=spec["memory"], region=spec["region"], request_id=request_id)
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, float(spec["timeout"]))
        try:
            outcome, status = handler(event, context), 0
        except (Exception, _TimedOut) as exc:  # noqa: BLE001 - as Lambda: any error becomes the error document
            outcome, status = _error_document(exc), 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        duration_ms = (time.perf_counter() - started) * 1000
        max_mb = _peak_rss_mb()
        killed = ""
        if max_mb > spec["memory"]:
            # A peak the 5 ms sampler missed (an allocation in C holds the GIL): Lambda would have killed it.
            outcome, status = _out_of_memory(request_id), 1
            killed = "\tStatus: error\tError Type: Runtime.OutOfMemory"
        init = f"\tInit Duration: {init_ms:.2f} ms" if attempt == 0 else ""
        print(
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms{init}"
            f"\tMemory Size: {spec['memory']} MB\tMax Memory Used: {max_mb:.0f} MB{killed}",
            file=sys.stderr,
            flush=True,
        )
        if status:
            break
    if not write_result(outcome):
        os._exit(1)  # the memory watcher wrote Runtime.OutOfMemory and is ending the process
    if spec.get("record_loaded"):
        _record_loaded(spec["record_loaded"])
    sys.stderr.flush()
    # Lambda freezes and later discards the environment; it never runs interpreter teardown, whose
    # finalizers (e.g. clients closed during shutdown) would only add noise here.
    os._exit(status)


def _record_loaded(path: str) -> None:
    """Append every file this process loaded: imported modules and mapped shared libraries.

    The packaging test joins the lists of several invocations to prove every package in the layer
    is used by a function (a shared library loaded by the dynamic linker has no module, hence the
    memory map).
    """
    loaded = {os.path.realpath(f) for f in (getattr(m, "__file__", None) for m in list(sys.modules.values())) if f}
    try:
        with open("/proc/self/maps") as maps:
            loaded.update(os.path.realpath(line.split(None, 5)[5].strip()) for line in maps if line.count(" /") == 1
                          and len(line.split(None, 5)) == 6)
    except OSError:
        pass
    with open(path, "a") as out:
        out.writelines(f"{name}\n" for name in sorted(loaded))


# ----------------------------------------------------------------------------- parent


class InvokeError(Exception):
    """A usage or packaging problem (exit status 2)."""


def lambda_python_dir() -> str:
    """The project's Lambda runtime stand-in, ``<project>/.venv/lambda-python3.13`` (``make lambda-python``)."""
    from .project import ProjectNotFound, project_root

    try:
        return os.path.join(str(project_root()), LAMBDA_PYTHON_DIR)
    except ProjectNotFound as exc:
        raise InvokeError(str(exc)) from exc


def lambda_python() -> str:
    """The runtime's interpreter: Debian 13's CPython 3.13, through its wrapper. The layer holds cp313 wheels
    and 3.13 bytecode, so this process's Python (the developer environment's) cannot run the build."""
    path = os.path.join(lambda_python_dir(), "bin", f"python{PYTHON_VERSION}")
    if not os.access(path, os.X_OK):
        raise InvokeError(f"{path} not found: `make lambda-python` installs Lambda's Python {PYTHON_VERSION} "
                          "(Debian 13's CPython, in a root of its own)")
    return path


def _link_folder(name: str, modules: tuple[str, ...], missing_hint: str) -> str:
    """A folder holding symlinks to only ``modules`` (packages or single-file modules) of this Python."""
    import importlib.util

    folder = os.path.join(tempfile.gettempdir(), f"imgsim-invoke-{name}-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or not (spec.submodule_search_locations or spec.origin):
            raise InvokeError(f"{module} is not installed: {missing_hint}")
        if spec.submodule_search_locations:
            target, link = next(iter(spec.submodule_search_locations)), os.path.join(folder, module)
        else:
            target = str(spec.origin)
            link = os.path.join(folder, os.path.basename(target))
        if os.path.realpath(link) != os.path.realpath(target):
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(target, link)
    return folder


def _embedded_store_path() -> str:
    """A folder holding only the Qdrant Edge package, for runs without QDRANT_URL.

    Deployed functions always use a Qdrant server; the embedded engine is a local stand-in
    and is not in the layer. Only that one package is added (last on ``sys.path``), so
    anything else missing from the built layer still fails here as it would on Lambda.
    """
    return _link_folder("edge", ("qdrant_edge",), "QDRANT_URL is not set; `make setup` installs qdrant-edge-py")


def _runtime_sdk_path() -> str:
    """The AWS SDK as the python3.13 runtime provides it (/var/lang/lib/python3.13/site-packages: boto3, botocore
    and their dependencies, with 3.13 bytecode): after the layers on sys.path, nothing else. The layer leaves it
    out (layers/shared/prune.py); ``make lambda-python`` installs it beside the interpreter."""
    path = os.path.join(lambda_python_dir(), "runtime-sdk")
    if not os.path.isdir(os.path.join(path, "boto3")):
        raise InvokeError(f"{path} has no boto3: run `make lambda-python`")
    return path


def _load_env_overrides(path: str | None) -> dict:
    if not path:
        return {}
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InvokeError(f"cannot read env vars file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InvokeError(
            f'{path}: expected {{"FunctionName": {{"VAR": "value"}}}} and/or {{"Parameters": {{...}}}}'
        )
    return data


def _parse_parameter_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvokeError(f"--parameter-overrides wants Key=Value, got {item!r}")
        overrides[key] = value
    return overrides


def _aws_creds() -> dict:
    # The same keys as SAM CLI's get_aws_creds(): taken from the shell, placeholders otherwise.
    creds = {
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        "key": os.environ.get("AWS_ACCESS_KEY_ID", "defaultkey"),
        "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", "defaultsecret"),
    }
    if os.environ.get("AWS_SESSION_TOKEN"):
        creds["sessiontoken"] = os.environ["AWS_SESSION_TOKEN"]
    return creds


def build_spec(
    function: str,
    event_path: str | list[str],
    build_dir: str,
    env_vars_path: str | None = None,
    parameter_overrides: dict[str, str] | None = None,
    repeat: int = 1,
) -> tuple[dict, dict[str, str]]:
    """Resolve the function from the built template: (spec for the child, child environment)."""
    from samcli.local.lambdafn.env_vars import EnvironmentVariables

    from .template_functions import EMPTY_PARAMETER, TemplateError, read_function

    template_path = os.path.join(build_dir, "template.yaml")
    if not os.path.isfile(template_path):
        raise InvokeError(f"{template_path} not found: run `sam build` (or `make build`) first")
    event_paths = [event_path] if isinstance(event_path, str) else list(event_path)
    for path in event_paths:
        if not os.path.isfile(path):
            raise InvokeError(f"event file {path} not found")
    creds = _aws_creds()
    try:
        fn = read_function(function, template_path, parameter_overrides=parameter_overrides, region=creds["region"])
    except TemplateError as exc:
        raise InvokeError(str(exc)) from exc
    if fn.runtime != f"python{PYTHON_VERSION}":
        raise InvokeError(f"{function} has runtime {fn.runtime}; this runner runs python{PYTHON_VERSION}")
    task_dir = str(fn.code_dir)
    if not os.path.isdir(task_dir):
        raise InvokeError(f"{task_dir} (CodeUri of {function}) not found: run `sam build`")
    sys_path = [task_dir]
    for layer_path in fn.layer_dirs:
        layer_dir = str(layer_path)
        if not os.path.isdir(layer_dir):
            raise InvokeError(f"{layer_dir} (a layer of {function}) not found: run `sam build`")
        # Lambda puts both of these on sys.path for python3.13 layers.
        sys_path += [
            os.path.join(layer_dir, "python", "lib", f"python{PYTHON_VERSION}", "site-packages"),
            os.path.join(layer_dir, "python"),
        ]

    env_files = _load_env_overrides(env_vars_path)
    env_overrides = dict(env_files.get("Parameters", {}))
    env_overrides.update(env_files.get(function, {}))
    variables = dict(fn.variables)
    env = EnvironmentVariables(
        fn.name,
        fn.memory_mb,
        fn.timeout_s,
        fn.handler,
        fn.logging_config,
        variables=variables,
        shell_env_values=os.environ,
        override_values=env_overrides,
        aws_creds=creds,
    ).resolve()
    env = {k: v.replace(EMPTY_PARAMETER, "") for k, v in env.items()}
    # Not in SAM: overrides for variables the template does not declare are passed as well.
    env.update({k: str(v) for k, v in env_overrides.items() if k not in variables})
    # What the Lambda python3.13 runtime adds around the function's own variables.
    env.update(
        {
            "LAMBDA_TASK_ROOT": task_dir,
            "_HANDLER": fn.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{PYTHON_VERSION}",
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
        }
    )
    if os.environ.get("TMPDIR"):
        env["TMPDIR"] = os.environ["TMPDIR"]
    sys_path.append(_runtime_sdk_path())
    if not env.get("QDRANT_URL"):
        sys_path.append(_embedded_store_path())
    spec = {
        "function_name": fn.name,
        "handler": fn.handler,
        "task_dir": task_dir,
        "sys_path": sys_path,
        "event_paths": [os.path.abspath(p) for p in event_paths],
        "memory": fn.memory_mb,
        "timeout": fn.timeout_s,
        "region": creds["region"],
        "repeat": repeat,
    }
    return spec, env


def invoke(
    function: str,
    event_path: str | list[str],
    build_dir: str = ".aws-sam/build",
    env_vars_path: str | None = None,
    parameter_overrides: dict[str, str] | None = None,
    repeat: int = 1,
    python: str | None = None,
    capture: bool = False,
    record_loaded: str | None = None,
):
    """Run the function in a fresh isolated interpreter (``python``: the runtime's, :func:`lambda_python`, unless
    given); returns the CompletedProcess.

    ``record_loaded``: a file to which the child appends the path of every module and shared library
    it loaded (``--record-loaded``; the packaging test's proof that the layer carries nothing unused).
    """
    import subprocess
    import tempfile

    spec, env = build_spec(function, event_path, build_dir, env_vars_path, parameter_overrides, repeat)
    if record_loaded:
        spec["record_loaded"] = os.path.abspath(record_loaded)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    try:
        # -I: no user site, no PYTHON* variables, script dir not on the path; -S: no site-packages.
        # -B: Lambda's code directories are read-only, so no bytecode is ever written next to the
        # artifacts (a run must not change what the next one, or a packaging check, sees).
        command = [python or lambda_python(), "-I", "-S", "-B", os.path.abspath(__file__), CHILD_FLAG, fh.name]
        return subprocess.run(command, env=env, capture_output=capture, text=True, check=False)
    finally:
        os.unlink(fh.name)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Run a function from `sam build` output as Lambda lays it out (no Docker needed)."
    )
    parser.add_argument("function", help="logical ID, e.g. IndexFunction or SearchFunction")
    parser.add_argument("events", nargs="+", help="event JSON file(s), e.g. events/index_put.json")
    parser.add_argument("--env-vars", "-n", help="JSON file of environment overrides, as for `sam local invoke`")
    parser.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--build-dir", "-b", default=".aws-sam/build")
    parser.add_argument("--repeat", type=int, default=1, help="invoke the events N times in one environment")
    parser.add_argument("--record-loaded", metavar="FILE",
                        help="append the paths of every module and shared library the function loaded to FILE")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        completed = invoke(
            args.function,
            args.events,
            build_dir=args.build_dir,
            env_vars_path=args.env_vars,
            parameter_overrides=_parse_parameter_overrides(args.parameter_overrides),
            repeat=args.repeat,
            record_loaded=args.record_loaded,
        )
    except InvokeError as exc:
        print(f"invoke: error: {exc}", file=sys.stderr)
        return 2
    return completed.returncode


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == CHILD_FLAG:
        sys.exit(child_main(sys.argv[2]))
    sys.exit(main())
