"""imgsim.settings: every variable read in one place, validated with one-line errors, built once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from imgsim import settings
from imgsim.errors import ConfigError
from imgsim.settings import ApiSettings, AppSettings, IndexSettings, Settings, load

REPO = Path(__file__).resolve().parents[2]


def test_defaults_without_any_variable() -> None:
    loaded = load({})
    assert loaded == AppSettings(engine=Settings(), index=IndexSettings(), api=ApiSettings())
    assert loaded.index.duplicate_check == settings.DEFAULT_DUPLICATE_THRESHOLD
    assert loaded.api.upload_prefix == "uploads/"


def test_values_are_parsed_into_their_types() -> None:
    loaded = load({
        "IMGSIM_MAX_DECODE_MB": "420", "IMGSIM_MAX_DECODE_MS": "5000", "QDRANT_URL": "http://q:6333",
        "QDRANT_ON_DISK_PAYLOAD": "true", "QDRANT_SHARDS": "6", "IMGSIM_QUANTIZATION": "Binary",
        "IMGSIM_IGNORE_PREFIXES": " thumbs/, ,tmp/", "IMGSIM_DEDUPE": "off", "IMGSIM_ALIAS_TTL": "0",
        "IMAGES_BUCKET": "b", "IMGSIM_UPLOAD_PREFIX": "", "IMGSIM_SIMILAR_THRESHOLD": "0.6",
    })
    assert loaded.engine.max_decode_mb == 420 and loaded.engine.max_decode_ms == 5000.0
    assert loaded.engine.qdrant_on_disk_payload is True and loaded.engine.qdrant_shards == 6
    assert loaded.engine.quantization == "binary" and loaded.engine.alias_ttl_s == 0.0
    assert loaded.index.ignore_prefixes == ("thumbs/", "tmp/")
    assert loaded.index.dedupe is False and loaded.index.duplicate_check is None
    # An empty upload prefix is a choice (the bucket's root), not "unset".
    assert loaded.api.images_bucket == "b" and loaded.api.upload_prefix == ""
    assert loaded.api.similar_threshold == 0.6


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("IMGSIM_DEDUPE", "disabled", "IMGSIM_DEDUPE must be one of 1, true, yes, on, 0, false, no, off, got 'disabled'"),
    ("IMGSIM_QUANTIZATION", "int4", "IMGSIM_QUANTIZATION must be one of none, int8, binary, got 'int4'"),
    ("IMGSIM_MAX_DECODE_MB", "lots", "IMGSIM_MAX_DECODE_MB must be an integer, got 'lots'"),
    ("IMGSIM_MAX_DECODE_MB", "0", "IMGSIM_MAX_DECODE_MB must be at least 1, got '0'"),
    ("IMGSIM_OVERSAMPLING", "nan", "IMGSIM_OVERSAMPLING must be a finite number, got 'nan'"),
    ("IMGSIM_DUPLICATE_THRESHOLD", "1.5", "IMGSIM_DUPLICATE_THRESHOLD must be at most 1.0, got '1.5'"),
    ("QDRANT_WRITE_ORDERING", "eventual", "QDRANT_WRITE_ORDERING must be one of weak, medium, strong, got 'eventual'"),
    ("IMGSIM_VECTORS_ON_DISK", "maybe", ("IMGSIM_VECTORS_ON_DISK must be one of 1, true, yes, on, 0, false, no, off, "
                                         "got 'maybe'")),
])
def test_a_bad_value_is_one_line_naming_the_variable_and_what_it_accepts(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({name: value})
    assert str(caught.value) == expected
    assert "\n" not in str(caught.value)


def test_blank_values_mean_the_default() -> None:
    assert load({"IMGSIM_MAX_PIXELS": "", "QDRANT_URL": "  ", "IMGSIM_DEDUPE": ""}) == load({})


def test_the_environment_is_read_only_by_the_settings_module() -> None:
    """Nothing else in the layer or the tooling reads imgsim's variables from os.environ."""
    offenders = []
    for root in (REPO / "layers" / "shared" / "imgsim", REPO / "infra" / "imgsim_tools", REPO / "functions"):
        for path in root.rglob("*.py"):
            if path.name == "settings.py" and path.parent.name == "imgsim":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"(os\.environ|os\.getenv)\S*\W+\"(IMGSIM_|QDRANT_|IMAGES_BUCKET)", line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_every_variable_the_template_sets_is_a_setting() -> None:
    template = (REPO / "template.yaml").read_text()
    declared = set(re.findall(r"^\s+((?:IMGSIM|QDRANT)_[A-Z_]+|IMAGES_BUCKET):", template, re.MULTILINE))
    assert declared, "no imgsim variables found in template.yaml"
    assert declared - set(settings.VARIABLES) == set()


def test_the_default_duplicate_threshold_is_the_signatures_calibrated_one():
    """settings stays light (no numpy at import: cold starts), so it repeats the figure imgsim.signature calibrates."""
    from imgsim import signature

    assert settings.DEFAULT_DUPLICATE_THRESHOLD == signature.DEFAULT_DUPLICATE_THRESHOLD
