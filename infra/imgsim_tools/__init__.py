"""imgsim's developer tooling, outside the Lambda layer: the ``imgsim`` CLI (index, search, backfill, migrate,
serve), the local stack, the Docker-free invoke runner, the one Lambda-runtime emulation they and the tests
share, and the event builders. Installed with the ``cli`` extra (``pip install -e '.[cli]'``); nothing here is
imported by the functions."""
