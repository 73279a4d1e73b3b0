"""Create, list and revoke the API's keys: each with a name, scopes and an optional tenant; only hashes are stored.

    imgsim keys create --name web --scopes search upload [--tenant acme]   # prints the new key once
    imgsim keys list [--json]
    imgsim keys revoke web

Where the key ring lives: ``--param NAME`` (an SSM SecureString, as deployed: the template's ApiKeysParameterName,
default /imgsim/api-keys), ``--file PATH``, else IMGSIM_API_KEYS_PARAM (an SSM name, or ``file:PATH``), else the
local stack's ring ``<--data-dir>/api-keys.json`` (``imgsim serve`` reads it). The SearchFunction reads the ring
again every 60 s, so a revoked key stops working within a minute; a created one works within a minute too (at once
on the local stack). Rotate a key by creating the new one, moving the clients, then revoking the old one.

The SSM parameter is written with tier Intelligent-Tiering: a standard parameter (4 KB, ~30 keys) while the ring
fits, an advanced one beyond. Two ``keys`` commands changing one SSM ring at once can lose one change (SSM has no
compare-and-swap): run them one at a time. The local file is locked while it is changed and replaced atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imgsim.access import (
    SCOPES,
    KeyEntry,
    check_scopes,
    check_tenant,
    hash_key,
    key_ring_document,
    new_key,
    parse_key_ring,
)
from imgsim.errors import ConfigError

from .common import EXIT_OK, UsageError

if TYPE_CHECKING:
    from ..session import Session

LOCAL_RING = "api-keys.json"  # in the local stack's data dir (imgsim_tools.local.stack)
REVOKE_DELAY_S = 60  # imgsim.services.keys.KEY_RING_MAX_AGE_S


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--param", metavar="NAME", help="the SSM SecureString holding the ring (deployed)")
    where.add_argument("--file", metavar="PATH", help="a local ring file")
    parser.add_argument("--data-dir", default="./.data",
                        help="the local stack's data dir, when neither --param, --file nor IMGSIM_API_KEYS_PARAM "
                             "is given (default ./.data, as imgsim serve)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="create|list|revoke")
    create = actions.add_parser("create", help="a new key: printed once, its hash stored")
    create.add_argument("--name", required=True, help="how logs, metrics and GET /me name the key")
    create.add_argument("--scopes", required=True, nargs="+", choices=SCOPES, metavar="SCOPE",
                        help=f"one or more of {', '.join(SCOPES)}")
    create.add_argument("--tenant", help="the tenant whose images the key sees (none: images outside tenants/)")
    listing = actions.add_parser("list", help="the keys' names, scopes and tenants (never a key)")
    listing.add_argument("--json", action="store_true", help='print {"keys": [...]} with the hashes')
    revoke = actions.add_parser("revoke", help="remove a key: it stops working within a minute")
    revoke.add_argument("name")


class RingStore(Protocol):
    where: str

    def read(self) -> tuple[KeyEntry, ...]: ...

    @contextlib.contextmanager
    def changing(self) -> Iterator[list[KeyEntry]]: ...


class FileRing:
    """A ring in a local file (0600), changed under an exclusive lock and replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"file {path}"

    def read(self) -> tuple[KeyEntry, ...]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ()
        return parse_key_ring(text, str(self.path)) if text.strip() else ()

    @contextlib.contextmanager
    def changing(self) -> Iterator[list[KeyEntry]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = list(self.read())
            yield entries
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(key_ring_document(entries))
                os.chmod(temporary, 0o600)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise


class SsmRing:
    """A ring in an SSM SecureString (what the SearchFunction reads)."""

    def __init__(self, ssm: Any, name: str) -> None:
        self.ssm = ssm
        self.name = name
        self.where = f"SSM parameter {name}"

    def read(self) -> tuple[KeyEntry, ...]:
        try:
            value = self.ssm.get_parameter(Name=self.name, WithDecryption=True)["Parameter"]["Value"]
        except self.ssm.exceptions.ParameterNotFound:
            return ()
        return parse_key_ring(value, self.where) if value.strip() else ()

    @contextlib.contextmanager
    def changing(self) -> Iterator[list[KeyEntry]]:
        entries = list(self.read())
        yield entries
        self.ssm.put_parameter(Name=self.name, Value=key_ring_document(entries), Type="SecureString",
                               Overwrite=True, Tier="Intelligent-Tiering",
                               Description="imgsim: API key ring (names, scopes, tenants, SHA-256 of the keys)")


def ring_store(args: argparse.Namespace, session: Session) -> RingStore:
    configured = session.app_settings.api.api_keys_param
    if args.file:
        return FileRing(Path(args.file))
    name = args.param or configured
    if name and name.startswith("file:"):
        return FileRing(Path(name.split(":", 1)[1]))
    if name:
        return SsmRing(session.client("ssm"), name)
    return FileRing(Path(args.data_dir) / LOCAL_RING)


def describe(entry: KeyEntry) -> str:
    scopes = ", ".join(s for s in SCOPES if s in entry.scopes)
    return f"{entry.name}  scopes: {scopes}  tenant: {entry.tenant or '-'}"


def run(args: argparse.Namespace, session: Session) -> int:
    store = ring_store(args, session)
    try:
        if args.action == "list":
            entries = store.read()
            if args.json:
                print(key_ring_document(entries))
            elif not entries:
                print(f"no keys in {store.where}")
            else:
                for entry in entries:
                    print(describe(entry))
            return EXIT_OK
        if args.action == "create":
            tenant = check_tenant(args.tenant, "--tenant") if args.tenant else None
            key = new_key()
            created = KeyEntry(args.name, hash_key(key), check_scopes(args.scopes, "--scopes"), tenant)
            parse_key_ring(json.dumps({"keys": [created.document()]}), "--name")  # the name's rules
            with store.changing() as entries:
                if any(e.name == args.name for e in entries):
                    raise UsageError(f"a key named {args.name!r} exists in {store.where}; revoke it first, or "
                                     "choose another name (rotation: create the new key, then revoke the old)")
                entries.append(created)
            print(f"created key {describe(created)} in {store.where}; the key is shown once:", file=sys.stderr)
            print(key)
            return EXIT_OK
        with store.changing() as entries:
            kept = [e for e in entries if e.name != args.name]
            if len(kept) == len(entries):
                raise UsageError(f"no key named {args.name!r} in {store.where} (imgsim keys list)")
            entries[:] = kept
        print(f"revoked key {args.name!r} in {store.where}; deployed functions stop accepting it within "
              f"{REVOKE_DELAY_S} s")
        return EXIT_OK
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
