# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install lms-sync, run `lms-sync demo`
#   make test   - create .venv, install lms-sync with test extras, run the whole test suite
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: install test lint demo bench bench-bulk clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,postgres,mysql,cluster]'
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/pytest -n 2 -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

demo: install
	$(BIN)/lms-sync demo

bench: install
	$(BIN)/python benchmarks/sync.py --learners 2000

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

# issue #19's record-heavy workload on the local PostgreSQL; BULK_ARGS e.g. "--repeat 3 --out x.json"
bench-bulk: $(BIN)/.bench-installed
	$(BIN)/python benchmarks/sync.py --workload bulk $(BULK_ARGS)

clean:
	rm -rf $(VENV) lms_sync_demo.db*
