"""The ``imgsim`` command: the dispatcher of ``imgsim_tools.commands`` (one module per command).

It parses the global options (accepted before and after the command) and the command's own, reads the settings
once (the environment with the global options applied, ``imgsim_tools.session``), runs the command on a
``Session`` and turns what happened into an exit code and at most one line on stderr.

With ``--api URL`` a command talks to a deployed API instead (``imgsim_tools.remote``: its ``run_remote`` on an
API client; no settings read, no Qdrant or model touched).

Exit codes: 0 success, 1 failure (store or API unreachable, model missing, files that
could not be read), 2 bad usage or input (unknown option, missing file, not an
image, a wrong API key), 130 interrupted (Ctrl-C). Errors go to stderr as one line; ``-v`` adds
tracebacks and debug logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

from . import commands
from .commands.common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from .session import GLOBAL_OPTIONS, Session, global_overrides, read_settings

# -- argument parsing -----------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imgsim")
    except PackageNotFoundError:
        return "unknown"


def _global_options() -> argparse.ArgumentParser:
    """Options accepted before and after the command. SUPPRESS defaults keep a
    command's parser from overwriting a value given before the command."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("--collection", default=argparse.SUPPRESS, help="Qdrant collection (QDRANT_COLLECTION, default images)")
    group.add_argument(
        "--qdrant-path", default=argparse.SUPPRESS, metavar="DIR",
        help="embedded Qdrant folder (QDRANT_PATH, default ./.data/qdrant; ':memory:' for a throwaway store)",
    )
    group.add_argument(
        "--qdrant-url", default=argparse.SUPPRESS, metavar="URL",
        help="Qdrant server URL (QDRANT_URL; key from QDRANT_API_KEY or the QDRANT_API_KEY_PARAM SSM parameter)",
    )
    group.add_argument(
        "--api", default=argparse.SUPPRESS, metavar="URL",
        help="talk to a deployed imgsim API (or `imgsim serve`) instead of Qdrant: search, compare, upload, get, "
             "delete, duplicates, trash; the key from IMGSIM_API_KEY",
    )
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logs and tracebacks")
    return common


GLOBAL_DESTS = (*GLOBAL_OPTIONS, "api", "verbose")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: global options and the command's name. Each command's options are parsed later by
    ``command_parser``, so a command's module (the local stack pulls in moto and more) is imported only when
    that command runs."""
    parser = argparse.ArgumentParser(
        prog="imgsim",
        description="Image similarity search: embed, index, search and compare images.",
        epilog="Exit codes: 0 success, 1 failure, 2 bad usage or input, 130 interrupted.",
        parents=[_global_options()],
    )
    parser.add_argument("--version", action="version", version=f"imgsim {_version()}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in commands.COMMANDS.items():
        subcommands.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str, module: ModuleType) -> argparse.ArgumentParser:
    """A command's parser: its own options (``add_arguments``) and the global ones; its description is the
    first paragraph of the module's docstring."""
    doc = (getattr(module, "__doc__", None) or commands.COMMANDS[name]).strip()
    # conflict_handler="resolve": an option the command defines itself wins over a global one.
    parser = argparse.ArgumentParser(
        prog=f"imgsim {name}", description=" ".join(doc.split("\n\n")[0].split()),
        parents=[_global_options()], conflict_handler="resolve",
    )
    module.add_arguments(parser)
    return parser


# -- entry point --------------------------------------------------------------------------------


@contextmanager
def _log_to_stderr(verbose: bool) -> Iterator[None]:
    """imgsim's log records on stderr for the length of one command."""
    package_logger = logging.getLogger("imgsim")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("imgsim: %(levelname)s: %(message)s"))
    old_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)


def _fail(message: str, code: int, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"imgsim: error: {message}", file=sys.stderr)
    return code


def parse(argv: Sequence[str] | None) -> tuple[ModuleType, argparse.Namespace]:
    """The command's module and its arguments, the global options included wherever they were given."""
    global_args, rest = build_parser().parse_known_args(argv)
    module = commands.load(global_args.command)
    args = command_parser(global_args.command, module).parse_args(rest)
    for dest in GLOBAL_DESTS:  # given before the command, not after it
        if not hasattr(args, dest):
            setattr(args, dest, getattr(global_args, dest, False if dest == "verbose" else None))
    return module, args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        module, args = parse(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except UsageError as exc:  # a command that cannot run here (`imgsim serve` outside a checkout)
        return _fail(str(exc), EXIT_USAGE, verbose=False)

    verbose = bool(args.verbose)
    session: Session | None = None
    with _log_to_stderr(verbose):
        try:
            environ = dict(os.environ)  # read once: the settings, and what a command names by variable
            if args.api is not None:
                # httpx and the client: only for a command run against an API
                from . import remote

                return remote.run(module, args, environ)
            overrides = global_overrides(args)
            session = Session(read_settings(environ, overrides), environ=environ, overrides=overrides,
                              verbose=verbose)
            return int(module.run(args, session) or 0)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        except KeyboardInterrupt:
            print("imgsim: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except UsageError as exc:
            return _fail(str(exc), EXIT_USAGE, verbose)
        except BrokenPipeError:
            # Output piped into `head` and the like: stop quietly, as other Unix tools do.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return EXIT_FAILURE
        except Exception as exc:  # noqa: BLE001 - one line for the user; the traceback with -v
            return _fail(str(exc) or type(exc).__name__, EXIT_FAILURE, verbose)
        finally:
            if session is not None:
                session.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
