# The two commands of the README: `make dev` (a local cluster doing real work) and `make test`.
# Both set up what they need: the virtualenv (.venv), the Python packages, and the Apache
# ZooKeeper/Kafka jars (fetched with Maven into .cache/jars, reused afterwards).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
START  := $(shell date +%s)

.PHONY: test dev venv jars proto lint typecheck unit clean prereqs

prereqs:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
	  || { echo "exportd needs Python 3.11+ as '$(PYTHON)' (set PYTHON=/path/to/python3.11)"; exit 2; }
	@command -v java >/dev/null || { echo "java not found: install Java 17+ (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"; exit 2; }
	@command -v mvn >/dev/null || { echo "mvn not found: install Maven 3.6+ (Debian/Ubuntu: apt-get install maven)"; exit 2; }

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,parquet]'
	@touch $@

venv: prereqs $(BIN)/.installed

jars: venv
	@$(BIN)/python -m tools.infra jars

test: venv jars
	@bash tools/run-tests.sh $(START)

unit: venv
	$(BIN)/pytest -q tests/unit

dev: venv jars
	$(BIN)/python -m tools.devcluster

proto: venv
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. proto/exportd.proto

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis
