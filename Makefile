# imgsim developer targets. `make setup` once, then `make test` / `make bench`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup model serve test test-fast test-tools lint-code checkov bench bench-scale bench-restart bench-chaos clean build invoke lint browser

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[cli]' -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP) model

model: $(STAMP)
	$(PY) model/fetch.py

# The whole stack on this machine: http://localhost:3000 (see README, "Local stack").
serve: setup
	$(VENV)/bin/imgsim serve $(SERVE_ARGS)

test: setup browser test-tools lint-code checkov
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast tier: unit tests of every pipeline stage and service with a fake embedder and an in-memory store
# (no model file, no process, no browser: tests/unit/conftest.py refuses them). Seconds, for every change.
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# checkov (the template scan in tests/test_template.py) in a venv of its own: its pins would fight aws-sam-cli's.
CHECKOV := $(VENV)/checkov/bin/checkov
checkov: $(CHECKOV)
$(CHECKOV):
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet --upgrade pip
	$(VENV)/checkov/bin/pip install --quiet checkov==3.3.30

# Ruff over the repository, mypy --strict on the package the functions run (config in pyproject.toml).
lint-code: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Headless Chromium for tests/test_web_page.py: Debian's package, driven by Playwright's Python API through
# executable_path (so no `playwright install` download).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for tests/test_web_page.py"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# avifenc (Debian's libavif-bin): 10-bit AVIF test files (tests/test_heif_avif.py); Pillow writes 8-bit only.
test-tools:
	@command -v avifenc >/dev/null || { echo "installing Debian's libavif-bin (avifenc) for tests/test_heif_avif.py"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libavif-bin; }

bench: setup
	$(PY) tests/bench/run.py

# The vector store at scale (README "Scale"): 100k points by default; SCALE_POINTS=1000000 for the 1M run.
bench-scale: setup
	$(PY) tests/bench/scale.py $(SCALE_ARGS)
	$(PY) tests/bench/dedupe_scale.py
	$(PY) tests/bench/restart.py

# Issue 9's fault runs at full size: kill -9 after 500 uploads + deletes + overwrites, double Ctrl-C.
bench-chaos: setup
	$(PY) tests/bench/chaos.py

# `imgsim serve` start/stop against the bucket size (100k stored objects; README "Reliability").
bench-restart: setup
	$(PY) tests/bench/restart.py $(RESTART_ARGS)

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .bench

# -- packaging (issue 5): `sam build` with the layer for ARCH and MODEL, the Docker-free local invoke runner, linters.
ARCH ?= x86_64
SAM := $(VENV)/bin/sam
SAM_ENV := SAM_CLI_TELEMETRY=0 PATH="$(CURDIR)/$(VENV)/bin:$$PATH" LAYER_ARCH=$(ARCH)

# MODEL: the template's Model parameter and the layer's first model (default: the manifest's default);
# EXTRA_MODELS: models the layer carries besides it (the one still served during a switch: README).
MODEL ?= $(shell $(PYTHON) -c 'import json; print(json.load(open("model/models.json"))["default"])')
EXTRA_MODELS ?=
build: setup
	$(SAM_ENV) LAYER_MODELS="$(MODEL) $(EXTRA_MODELS)" $(SAM) build --parameter-overrides Architecture=$(ARCH) Model=$(MODEL)

# make invoke FN=IndexFunction EVENT=events/index_put.json [ENV=env.json] [REPEAT=3]
# The default ENV points the functions at `imgsim serve`'s S3 emulator and an embedded Qdrant in /tmp.
INVOKE_ENV ?= infra/invoke.env.json
invoke: setup
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=IndexFunction EVENT=events/index_put.json [ENV=env.json] [REPEAT=n]" >&2; exit 2; }
	@test -f .aws-sam/build/template.yaml || $(MAKE) --no-print-directory build
	$(SAM_ENV) $(VENV)/bin/imgsim-invoke $(FN) $(EVENT) --env-vars $(if $(filter command line,$(origin ENV)),$(ENV),$(INVOKE_ENV)) $(if $(REPEAT),--repeat $(REPEAT))

lint: lint-code
	$(VENV)/bin/cfn-lint template.yaml
	SAM_CLI_TELEMETRY=0 AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-lint} AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-lint} \
		$(SAM) validate --lint --region $${AWS_REGION:-us-east-1}
