"""An independent fuzzer, driven only by GET /openapi.json, finds nothing: the document is the API's contract.

Schemathesis with all its checks (tests/api_fuzz.py says how and why) against `imgsim serve` holding a few real
photos: every status, code, content type, header and body the API answers is one the document declares, every
request the document calls valid is accepted (or answered 404/409 for images that are not there), every request it
calls invalid is refused with a 4xx, and nothing answers 5xx. Bounded: 25 cases per operation and phase, a fixed
seed (a failure replays with `python tests/api_fuzz.py --max-examples 25 --seed 20`); `make fuzz` runs longer.
"""

from __future__ import annotations

import pytest
from api_fuzz import run, seed_photos
from serve_support import API_KEY, running

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25
SEED = 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running(tmp_path_factory.mktemp("fuzz") / "data") as serve:
        yield serve


def failures(output: str) -> str:
    """The report's failures and summary (the whole output when it has no such section)."""
    start = output.find("=== FAILURES ===")
    return output[start - 40:] if start >= 0 else output[-6000:]


def test_schemathesis_finds_no_failure(stack):
    status, document = stack.request("GET", "/openapi.json", key=None)
    assert status == 200
    # Every operation but GET /openapi.json, which schemathesis leaves out as the document it reads.
    operations = sum(len(item) for item in document["paths"].values()) - 1
    ids = seed_photos(stack)
    result = run(stack.api_url, API_KEY, max_examples=MAX_EXAMPLES, seed=SEED, ids=ids)
    assert result.returncode == 0, f"schemathesis (exit {result.returncode}):\n{failures(result.stdout)}\n{result.stderr}"
    # Every operation tested, every phase run and passed: not a run that tested nothing.
    assert f"Selected: {operations}/{operations}\n  Tested: {operations}" in result.stdout, result.stdout[-3000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}\n" in result.stdout, f"phase {phase} did not pass:\n{result.stdout[-3000:]}"
