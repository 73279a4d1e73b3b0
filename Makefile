# imgsim developer targets. `make setup` once, then `make test` / `make bench`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup model serve test test-fast test-tools lint-code checkov fuzz bench bench-scale bench-restart bench-chaos clean build invoke lint browser lambda-python screenshot

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

test: setup lambda-python browser test-tools lint-code checkov
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast tier: unit tests of every pipeline stage and service with a fake embedder and an in-memory store
# (no model file, no process, no browser: tests/unit/conftest.py refuses them). Seconds, for every change.
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# Schemathesis against `imgsim serve` (holding a few photos), driven only by /openapi.json, all checks, every phase:
# the longer run of tests/test_search_api_fuzz.py (300 cases per operation and phase, a random seed printed for a
# replay: ~5,300 requests in ~5 min on 2 cores). FUZZ_ARGS: e.g. --seed N, --max-examples N, --url URL --key KEY.
fuzz: setup
	$(PY) tests/api_fuzz.py $(FUZZ_ARGS)

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

# Lambda's python3.13 runtime, for real: Debian 13's CPython 3.13 in a root of its own (debootstrap, ~30 s and
# ~270 MB once; only Debian's package registry is needed), and beside it the runtime's AWS SDK (runtime-sdk/,
# what Lambda puts on sys.path after the layers; compiled by 3.13 as Lambda ships it). The interpreter compiles
# the layer's bytecode, lets `sam build` build python3.13 functions, and runs the built functions (the invoke
# runner, tests/test_packaging.py, bench_cold_start, bench_formats). It needs glibc 2.38, newer than a Debian 12
# host's, so bin/python3.13 runs it with the root's own dynamic loader and libraries: no chroot, no privileges
# after the bootstrap. Idempotent: bin/python3.13 is written last, once everything else is in place.
LAMBDA_ROOT := $(VENV)/lambda-python3.13
LAMBDA_PYTHON := $(LAMBDA_ROOT)/bin/python3.13
# Stands in for the SDK the runtime ships (the functions call only S3 and SSM APIs every release has).
LAMBDA_SDK := boto3==1.43.108
# The Debian mirror apt is configured with (DEB822 .sources or one-line .list), else Debian's CDN.
HASH := \#
DEBIAN_MIRROR ?= $(or $(shell cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
	2>/dev/null | grep -v '^[[:space:]]*$(HASH)' | grep -oE 'https?://[^[:space:]]+/debian/?([[:space:]]|$$)' | head -n 1),http://deb.debian.org/debian)
lambda-python: $(LAMBDA_PYTHON)
$(LAMBDA_PYTHON):
	@command -v debootstrap >/dev/null || { echo "installing Debian's debootstrap (Lambda's Python 3.13 in a root of its own)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
	$(SUDO) rm -rf $(LAMBDA_ROOT)
	mkdir -p $(LAMBDA_ROOT)/bin
	$(SUDO) debootstrap --variant=minbase --include=python3.13,python3.13-venv trixie $(LAMBDA_ROOT)/root $(strip $(DEBIAN_MIRROR)) \
		> $(LAMBDA_ROOT)/debootstrap.log || { tail -n 20 $(LAMBDA_ROOT)/debootstrap.log >&2; exit 1; }
	loader=$$(cd $(LAMBDA_ROOT)/root && ls lib64/ld-linux-x86-64.so.2 lib/ld-linux-aarch64.so.1 2>/dev/null | head -n 1); \
	triplet=$$(ls $(LAMBDA_ROOT)/root/usr/lib | grep -m1 -- '-linux-gnu$$'); \
	printf '%s\n' '#!/bin/sh' '# CPython 3.13 of the Debian 13 root beside this folder, run with that root'"'"'s loader and libraries.' \
		'root="$$(cd "$$(dirname "$$0")/../root" && pwd)"' \
		"exec \"\$$root/$$loader\" --library-path \"\$$root/lib/$$triplet:\$$root/usr/lib/$$triplet\" \"\$$root/usr/bin/python3.13\" \"\$$@\"" \
		> $(LAMBDA_PYTHON).tmp
	chmod +x $(LAMBDA_PYTHON).tmp
	$(LAMBDA_PYTHON).tmp -c 'import sys, ssl, sqlite3; assert sys.version_info[:2] == (3, 13), sys.version; print("Lambda Python:", sys.version.split()[0])'
	$(LAMBDA_PYTHON).tmp $$(ls $(LAMBDA_ROOT)/root/usr/share/python-wheels/pip-*.whl)/pip install --quiet --no-compile \
		--disable-pip-version-check --root-user-action=ignore --target $(LAMBDA_ROOT)/runtime-sdk $(LAMBDA_SDK)
	rm -rf $(LAMBDA_ROOT)/runtime-sdk/bin
	$(LAMBDA_PYTHON).tmp -m compileall -q --invalidation-mode unchecked-hash $(LAMBDA_ROOT)/runtime-sdk
	mv $(LAMBDA_PYTHON).tmp $(LAMBDA_PYTHON)

# Headless Chromium for tests/test_web_page.py: Debian's package, driven by Playwright's Python API through
# executable_path (so no `playwright install` download).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for tests/test_web_page.py"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The README's picture of the page, docs/images/page.png: the web page test of search by a region takes it (a box
# dragged on the target, its results) when IMGSIM_PAGE_SCREENSHOT names a file; copied in only when the test passed.
# Other runs of the test leave it in the test's temporary folder: tests never write into the repository.
SCREENSHOT_TMP := .pytest_cache/page.png
screenshot: setup browser
	mkdir -p .pytest_cache docs/images
	rm -f $(SCREENSHOT_TMP)
	IMGSIM_PAGE_SCREENSHOT=$(CURDIR)/$(SCREENSHOT_TMP) $(PY) -m pytest tests/test_web_page.py -q \
		-k test_search_by_a_region_dragged_on_the_target
	cp $(SCREENSHOT_TMP) docs/images/page.png

# avifenc (Debian's libavif-bin): 10-bit AVIF test files (tests/test_heif_avif.py); Pillow writes 8-bit only.
test-tools:
	@command -v avifenc >/dev/null || { echo "installing Debian's libavif-bin (avifenc) for tests/test_heif_avif.py"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libavif-bin; }

bench: setup lambda-python
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
# sam build needs a python3.13 on PATH for the python3.13 functions; the layer's bytecode is compiled by it.
SAM_ENV := SAM_CLI_TELEMETRY=0 PATH="$(CURDIR)/$(LAMBDA_ROOT)/bin:$(CURDIR)/$(VENV)/bin:$$PATH" LAYER_ARCH=$(ARCH) \
	BYTECODE_PYTHON="$(CURDIR)/$(LAMBDA_PYTHON)"

# MODEL: the template's Model parameter and the layer's first model (default: the manifest's default);
# EXTRA_MODELS: models the layer carries besides it (the one still served during a switch: README).
MODEL ?= $(shell $(PYTHON) -c 'import json; print(json.load(open("model/models.json"))["default"])')
EXTRA_MODELS ?=
build: setup lambda-python
	$(SAM_ENV) LAYER_MODELS="$(MODEL) $(EXTRA_MODELS)" $(SAM) build --parameter-overrides Architecture=$(ARCH) Model=$(MODEL)

# make invoke FN=IndexFunction EVENT=events/index_put.json [ENV=env.json] [REPEAT=3]
# The default ENV points the functions at `imgsim serve`'s S3 emulator and an embedded Qdrant in /tmp.
INVOKE_ENV ?= infra/invoke.env.json
invoke: setup lambda-python
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=IndexFunction EVENT=events/index_put.json [ENV=env.json] [REPEAT=n]" >&2; exit 2; }
	@test -f .aws-sam/build/template.yaml || $(MAKE) --no-print-directory build
	$(SAM_ENV) $(VENV)/bin/imgsim-invoke $(FN) $(EVENT) --env-vars $(if $(filter command line,$(origin ENV)),$(ENV),$(INVOKE_ENV)) $(if $(REPEAT),--repeat $(REPEAT))

lint: lint-code
	$(VENV)/bin/cfn-lint template.yaml
	SAM_CLI_TELEMETRY=0 AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-lint} AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-lint} \
		$(SAM) validate --lint --region $${AWS_REGION:-us-east-1}
