# imgsim developer targets. `make setup` once, then `make test` / `make bench`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup model test bench clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[cli]' -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP) model

model: $(STAMP)
	$(PY) model/fetch.py

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) tests/bench/run.py

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .bench
