# Two commands on a fresh machine with only Python 3.11 and make:
#   make run   [PORT=8000] [DATA_DIR=data]   embedded service: SQLite + bundled Redis + worker + API
#   make test  [PYTEST_ARGS=...]             the whole pytest suite
#   make test-s3 [PYTEST_ARGS=...]           the same with TEST_ARTIFACT_BACKEND=s3: every test that
#                                            takes tests/conftest.py's `settings` (the API, worker and
#                                            store tests) uses S3 (a moto server the tests start on
#                                            127.0.0.1, one key prefix per test) instead of a directory
# The virtualenv is made once (stamp file) and refreshed when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

PORT ?= 8000
DATA_DIR ?= data
PYTEST_ARGS ?=
export PORT DATA_DIR

.PHONY: run test test-s3 test-all lint venv worker migrate clean help

help:
	@echo "make run [PORT=8000] [DATA_DIR=data]   start the embedded service (Ctrl+C stops all)"
	@echo "make test [PYTEST_ARGS=...]            run the test suite"
	@echo "make test-s3 [PYTEST_ARGS=...]         the test suite with the artifact store on S3 (moto)"
	@echo "make test-all                          include the slow (minutes-long) training tests"
	@echo "make lint                              ruff and mypy"

venv: $(STAMP)

# torch first and pinned (the CPU wheel on this disk): a bare `torch` would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 not found (set PYTHON=/path/to/python3.11)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
		|| { echo "$(PYTHON) is not Python 3.11 (set PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PIP) install --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	exec $(PY) -m runner

worker: $(STAMP)
	exec $(PY) -m worker

migrate: $(STAMP)
	$(PY) -m app.cli migrate

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-s3: $(STAMP)
	TEST_ARTIFACT_BACKEND=s3 $(PY) -m pytest $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -m '' $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check models app core runner worker tests bench examples migrations
	$(VENV)/bin/mypy --explicit-package-bases models app core runner worker

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
