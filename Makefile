# churnops — two commands are all the set-up a user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.churnops/dagster

.PHONY: install demo test test-fast lint format typecheck contracts ui mlflow-ui bench clean

# Bytecode is compiled at install time: where PYTHONDONTWRITEBYTECODE is set (as on our CI machines)
# Python never caches it, and every Dagster run process would recompile dagster, MLflow, LightGBM ...
# from source (4-6x slower imports; docs/benchmarks.md, "Import time").
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e ".[dev]"
	$(BIN)/python -m compileall -q churn_assets data_contracts bento benchmarks >/dev/null
	$(BIN)/python -m pip check
	@touch $(STAMP)

install: $(STAMP)

## demo: simulate history, run the main Dagster job on embedded defaults, print a summary
demo: install
	$(BIN)/churnops demo

## test: lint + typecheck + contracts on sample data + the whole test suite
test: install lint typecheck contracts
	$(BIN)/pytest -q -m "" tests

test-fast: install
	$(BIN)/pytest -q -m "not e2e and not service" tests

lint: install
	$(BIN)/ruff check churn_assets data_contracts tests benchmarks bento
	$(BIN)/ruff format --check churn_assets data_contracts tests benchmarks bento
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix churn_assets data_contracts tests benchmarks bento
	$(BIN)/ruff format churn_assets data_contracts tests benchmarks bento

typecheck: install
	$(BIN)/mypy

## contracts: the sample raw files must pass their contracts; the broken sample must fail
contracts: install
	$(BIN)/churnops contracts check data_contracts/samples/good
	@if $(BIN)/churnops contracts check data_contracts/samples/bad >/dev/null; then \
		echo "data_contracts/samples/bad passed its contracts but must not"; exit 1; \
	else echo "data_contracts/samples/bad rejected as expected"; fi

## ui: the Dagster UI + daemon on workspace.yaml (http://127.0.0.1:3000)
ui: install
	@mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	$(BIN)/dagster dev -w workspace.yaml

## mlflow-ui: the MLflow UI on the project's tracking store (SQLite + artifacts under the state folder; http://127.0.0.1:5000)
mlflow-ui: install
	eval $(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 \
		"$$($(BIN)/python -c 'import shlex; from churn_assets.modeling.paths import mlflow_ui_options; from churn_assets.settings import get_settings; print(shlex.join(mlflow_ui_options(get_settings())))')"

bench: install
	$(BIN)/python benchmarks/full_scale_pipeline.py

clean:
	rm -rf .churnops
