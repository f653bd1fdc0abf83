# Every target bootstraps .venv from pyproject.toml by itself (Python 3.11+ and pip are all it needs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench fuzz screenshot chromium clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/nvcf-emulate $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser tests drive Debian's chromium package; install it when missing (CI runs as root).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "warning: $(CHROMIUM) is missing (as root: apt-get install chromium);" \
	      "the browser tests will be skipped" >&2; \
	  fi; }

# The whole suite, then the behaviour suites again with asset bytes in S3 (moto).
S3_SUITES := tests/test_assets_api.py tests/test_upload.py tests/test_pexec.py tests/test_time.py \
	tests/test_hostile_assets.py tests/test_faults.py tests/test_tenancy.py tests/test_wire.py \
	tests/test_admin.py tests/test_exec.py
# Tests run on one pytest-xdist worker per core (PYTEST_WORKERS=0: in this process, serially).
PYTEST_WORKERS ?= auto
pytest: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
	NVCF_TEST_STORAGE=moto $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(S3_SUITES)

# A longer schemathesis run than make test's (NVCF_FUZZ_EXAMPLES per operation).
fuzz: $(STAMP)
	NVCF_FUZZ_EXAMPLES=$${NVCF_FUZZ_EXAMPLES:-300} $(BIN)/python -m pytest -q tests/test_fuzz.py

# Refresh docs/dashboard.png from the browser test.
screenshot: $(STAMP) chromium
	NVCF_DASHBOARD_SCREENSHOT=1 $(BIN)/python -m pytest -q tests/test_dashboard.py -k moves_the_clock

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache
