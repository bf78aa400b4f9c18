# The two commands of the README: `make demo` and `make test`. Both create the
# virtual environment and install the project first, on a fresh machine too.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/v2x demo --json out/demo_summary.json

test: $(STAMP)  ## the whole suite, then the scripted-VTN tests again over mutual TLS + signatures
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	V2X_TEST_SECURE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/integration -k "test_ven_" $(PYTEST_ARGS)

bench: $(STAMP)  ## benchmark tables (minutes; not part of the tests)
	$(BIN)/v2x bench allocator
	$(BIN)/v2x bench ven
	$(BIN)/v2x bench ocpp
	$(BIN)/v2x bench ingest

clean:
	rm -rf $(VENV) out *.egg-info
