"""`imgsim keys create | list | revoke`: a key is printed once, only its hash is stored (a local file, or the SSM
SecureString the SearchFunction reads), and the ring it writes is what the API accepts. The keys against a running
local stack (made, used, revoked): tests/test_api_cli.py."""

from __future__ import annotations

import json
import stat

import boto3
import pytest
from imgsim.access import hash_key, parse_key_ring
from imgsim.services import ApiKeys
from imgsim.settings import load
from imgsim_tools import cli
from moto import mock_aws


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "qdrant"))
    for name in ("IMGSIM_API_KEYS_PARAM", "IMGSIM_API_KEYS", "QDRANT_URL"):
        monkeypatch.delenv(name, raising=False)


def keys(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["keys", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_the_key_once_and_stores_only_its_hash(capsys, tmp_path):
    ring = tmp_path / "data" / "api-keys.json"
    code, out, err = keys(capsys, "--data-dir", str(tmp_path / "data"), "create", "--name", "web",
                          "--scopes", "search", "upload", "--tenant", "acme")
    assert code == 0, err
    key = out.strip()
    assert len(key) >= 43 and "\n" not in key and "web" in err and "shown once" in err
    text = ring.read_text()
    assert key not in text
    assert stat.S_IMODE(ring.stat().st_mode) == 0o600
    (entry,) = parse_key_ring(text)
    assert (entry.name, entry.sha256, sorted(entry.scopes), entry.tenant) == ("web", hash_key(key),
                                                                             ["search", "upload"], "acme")
    # The ring the command wrote is the one the API accepts (IMGSIM_API_KEYS_PARAM=file:..., as the local stack).
    api = ApiKeys(load({"IMGSIM_API_KEYS_PARAM": f"file:{ring}"}).api, read_secret=_read_file)
    principal = api.identify(key)
    assert principal is not None and principal.tenant == "acme" and not principal.allows("delete")


def _read_file(name: str, **_: object) -> str:
    from imgsim.composition import read_secret_parameter

    return read_secret_parameter(name)


def test_list_shows_names_scopes_and_tenants_never_keys(capsys, tmp_path):
    ring = tmp_path / "ring.json"
    made = [keys(capsys, "--file", str(ring), "create", "--name", name, "--scopes", *scopes)[1].strip()
            for name, scopes in (("web", ["search"]), ("ops", ["delete", "search"]))]
    code, out, _ = keys(capsys, "--file", str(ring), "list")
    assert code == 0 and out.splitlines() == ["web  scopes: search  tenant: -", "ops  scopes: search, delete  tenant: -"]
    assert not any(key in out for key in made)
    code, out, _ = keys(capsys, "--file", str(ring), "list", "--json")
    assert [e["name"] for e in json.loads(out)["keys"]] == ["web", "ops"]


def test_revoke_removes_the_key_and_unknown_names_are_usage_errors(capsys, tmp_path):
    ring = tmp_path / "ring.json"
    key = keys(capsys, "--file", str(ring), "create", "--name", "web", "--scopes", "search")[1].strip()
    assert keys(capsys, "--file", str(ring), "create", "--name", "web", "--scopes", "search")[0] == 2
    code, out, err = keys(capsys, "--file", str(ring), "revoke", "web")
    assert code == 0 and "within 60 s" in out
    assert parse_key_ring(ring.read_text()) == ()
    assert ApiKeys(load({"IMGSIM_API_KEY": "other"}).api, read_secret=_read_file).identify(key) is None
    code, _, err = keys(capsys, "--file", str(ring), "revoke", "web")
    assert code == 2 and "no key named 'web'" in err


@pytest.mark.parametrize("argv, message", [
    (["--name", "x", "--scopes", "search", "--tenant", "Not A Tenant"], "--tenant"),
    (["--name", "has space", "--scopes", "search"], "name"),
])
def test_bad_names_and_tenants_are_refused_with_the_rule(capsys, tmp_path, argv, message):
    code, out, err = keys(capsys, "--file", str(tmp_path / "ring.json"), "create", *argv)
    assert code == 2 and out == "" and message in err
    assert not (tmp_path / "ring.json").exists()


def test_an_unknown_scope_is_an_argparse_error(capsys, tmp_path):
    code, _, err = keys(capsys, "--file", str(tmp_path / "r.json"), "create", "--name", "x", "--scopes", "admin")
    assert code == 2 and "invalid choice: 'admin'" in err


def test_the_ssm_ring_is_a_secure_string_the_function_reads(capsys, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        monkeypatch.setenv("IMGSIM_API_KEYS_PARAM", "/imgsim/api-keys")
        key = keys(capsys, "create", "--name", "web", "--scopes", "search")[1].strip()
        other = keys(capsys, "--param", "/imgsim/api-keys", "create", "--name", "ops", "--scopes", "delete")[1]
        ssm = boto3.client("ssm", region_name="us-east-1")
        parameter = ssm.get_parameter(Name="/imgsim/api-keys", WithDecryption=True)["Parameter"]
        assert parameter["Type"] == "SecureString" and key not in parameter["Value"]
        assert [e.name for e in parse_key_ring(parameter["Value"])] == ["web", "ops"]

        def read(name: str, **_: object) -> str:
            return str(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])

        api = ApiKeys(load({"IMGSIM_API_KEYS_PARAM": "/imgsim/api-keys"}).api, read_secret=read)
        assert api.identify(key) is not None and api.identify(other.strip()) is not None
        assert keys(capsys, "revoke", "web")[0] == 0
        assert api.identify(key) is None
