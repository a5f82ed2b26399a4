# The two commands of the README: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install run up down status test test-unit test-integration test-e2e chaos check lint types schemas bench clean

install: $(BIN)/llmgw
$(BIN)/llmgw: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

run: install          ## everything, in the foreground (Ctrl-C stops it)
	$(BIN)/llmgw up

up: install           ## everything, detached
	$(BIN)/llmgw up --detach

down:
	$(BIN)/llmgw down

status:
	$(BIN)/llmgw status

# `make test SKIP_UNIT=1` leaves out tests/unit (CI: `make check` has just run them).
test: install         ## every tier: unit, then a real broker (started by the tests), then the whole stack
	$(BIN)/python -m pytest tests -q -p no:cacheprovider --ignore=tests/chaos $(if $(SKIP_UNIT),--ignore=tests/unit)

test-unit: install
	$(BIN)/python -m pytest tests/unit -q

test-integration: install
	$(BIN)/python -m pytest tests/integration -q

test-e2e: install
	$(BIN)/python -m pytest tests/e2e -q

chaos: install        ## faults on the whole stack, its own broker (about 3 minutes); prints the table
	$(BIN)/python -m pytest tests/chaos -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench

types: install        ## mypy, strict, with the pydantic plugin (configured in pyproject.toml)
	$(BIN)/mypy

check: lint types schemas test-unit   ## format/lint, types, schema drift, unit tests

schemas: install
	$(BIN)/llmgw schemas check
	$(BIN)/llmgw asyncapi --check

bench: install        ## gateway vs direct, see bench/README.md
	$(BIN)/python -m bench.kafka_bench

clean:
	rm -rf .llmgw
