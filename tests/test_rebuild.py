"""The index is derived data: `imgsim backfill` rebuilds a lost collection from the bucket, exactly.

On both store backends (the server one on qdrant-client's in-memory mode): index a bucket, keep what
is stored, delete the collection (and its companions), backfill again, compare point by point.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from imgsim.composition import Root
from imgsim_tools.commands import backfill
from imgsim_tools.session import Session
from roots import make_root, server_catalogs

BUCKET = "imgsim-images"
VOLATILE = {"indexed_at"}  # when it was indexed: the only thing a rebuild changes


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    backfill.add_arguments(parser)
    return parser.parse_args([*argv, "--quiet"])


class Functions:
    """A composition root on a fresh store of ``backend``; ``restart`` builds a new one on the same store (the
    embedded folder's lock released first; on the server stand-in, the same server)."""

    def __init__(self, tmp_path, backend: str) -> None:
        self.tmp_path, self.backend = tmp_path, backend
        self.catalogs = server_catalogs() if backend == "server" else None
        self.root = self._build()

    def _build(self) -> Root:
        return make_root(self.tmp_path, backend=self.backend, catalogs=self.catalogs)

    def restart(self) -> Root:
        self.root.close()
        self.root = self._build()
        return self.root


@pytest.fixture
def functions(backend, tmp_path, moto_s3):
    """The root on the store of ``backend`` (its boto3 clients made inside moto's mock)."""
    made = Functions(tmp_path, backend)
    yield made
    made.root.close()


@pytest.fixture
def s3(functions, moto_s3):
    return moto_s3


def run(root: Root, args: argparse.Namespace) -> int:
    """`imgsim backfill` on ``root``'s objects (the ones this test inspects)."""
    return backfill.run(args, Session.on_root(root))


def snapshot(root: Root) -> dict[str, tuple[dict, np.ndarray]]:
    store = root.store()
    points: dict[str, tuple[dict, np.ndarray]] = {}
    offset = None
    while True:
        records, offset = store.scroll(limit=100, offset=offset, with_vectors=True)
        for record in records:
            payload = {k: v for k, v in record.payload.items() if k not in VOLATILE}
            points[record.id] = (payload, np.asarray(record.vector, dtype=np.float32))
        if offset is None:
            return points


def test_a_deleted_collection_is_rebuilt_exactly_from_the_bucket(s3, functions, photos, capsys):
    root = functions.root
    # Photos in several folders, two copies of one (a recorded duplicate), and a file that is no image.
    keys = {f"trip/{i % 3}/p{i}.jpg": photos[i * 97].read_bytes() for i in range(14)}
    keys["trip/copy-of-p0.jpg"] = keys["trip/0/p0.jpg"]
    for key, data in keys.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    s3.put_object(Bucket=BUCKET, Key="trip/notes.txt", Body=b"not a photo")
    assert run(root, parse(f"s3://{BUCKET}")) == 0
    before = snapshot(root)
    assert len(before) == len(keys)
    assert any(payload.get("dup_links") for payload, _ in before.values())  # the copy and p0 linked

    # The collection is lost (deleted, or corrupted and dropped), companions included.
    layout = root.layout()
    root.catalog().drop(layout.serving.collection)
    root = functions.restart()
    assert root.store().count() == 0

    assert run(root, parse(f"s3://{BUCKET}")) == 0
    assert f"indexed   {len(keys)}" in capsys.readouterr().out
    after = snapshot(root)
    assert set(after) == set(before)
    for point_id, (payload, vector) in before.items():
        assert after[point_id][0] == payload, point_id
        np.testing.assert_allclose(after[point_id][1], vector, atol=1e-6)
