"""The ``imgsim`` commands, one module each, all built the same way.

Each module's docstring begins with the paragraph ``imgsim COMMAND --help`` shows, and the module has two functions
(three in those that also run against an API):

* ``add_arguments(parser)``: the command's own options (the global ones are the dispatcher's);
* ``run(args, session) -> int``: the work, on a ``imgsim_tools.session.Session`` (the settings, read once, and the
  objects built from them); the exit code (``commands.common``: 0, 1 failure, 2 usage, 130 interrupted);
* ``run_remote(args, api) -> int``, in the commands that also run against a deployed API (``imgsim --api URL``):
  the same work through ``imgsim_tools.api_client.ApiClient``, printed the same way (``imgsim_tools.remote``).

``COMMANDS`` lists them with their one-line help, in the order ``imgsim --help`` shows them; a command's module is
imported only when that command runs (``imgsim serve`` pulls in moto and more).
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS: dict[str, str] = {
    "embed": "print image vectors as JSON lines",
    "index": "index image files and folders",
    "search": "find indexed images similar to an image",
    "compare": "similarity of two images",
    "upload": "upload image files and folders to a deployed API (--api URL), to be indexed there",
    "get": "an indexed image's details, duplicate group and URL (by id or key)",
    "migrate": "copy the embedded index to a Qdrant server, or back",
    "backfill": "index existing S3 objects (s3://bucket/prefix)",
    "duplicates": "list and resolve groups of duplicate images",
    "delete": "move indexed images to the trash (by id or key)",
    "trash": "list, restore or empty the trash (deleted images, kept IMGSIM_TRASH_DAYS)",
    "reindex": "build a model's collection from the bucket, then switch to it (--model NAME)",
    "serve": "run the whole stack on this machine (local S3, queue, API, web page)",
    "keys": "create, list or revoke the API's keys (scopes, tenants; only hashes are stored)",
}


def load(name: str) -> ModuleType:
    """The module of command ``name``."""
    if name not in COMMANDS:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
