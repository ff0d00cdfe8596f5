# churnops — two commands are all the set-up a user needs: `make demo` and `make test`.
# `make help` lists the targets. Steps that need root (or sudo) and apt-get: `services` when Redis or
# PostgreSQL is stopped or /usr/bin/chromium or /usr/bin/promtool is missing, and `bench-tools` when wrk is
# missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# pytest processes of `make test` (pytest-xdist; each takes whole test files, the tests of the shared churn
# service all in one process: tests/conftest.py): 2 for a 2-core box, 1 = serial
TEST_PROCESSES ?= 2
export DAGSTER_HOME := $(CURDIR)/.churnops/dagster

# The services the tests use (tests read their URLs from churn_assets.settings, whose defaults are these).
REDIS_PORT    ?= 6379
REDIS_DIR     ?= /var/lib/redis
REDIS_LOG_DIR ?= /var/log/redis
PG_HOST       ?= 127.0.0.1
PG_PORT       ?= 5432
SERVICE_WAIT  ?= 30
CHROMIUM      ?= /usr/bin/chromium
PROMTOOL      ?= /usr/bin/promtool
# Root runs the system steps itself; anyone else goes through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: help install audit services demo test test-fast lint format typecheck contracts ui mlflow-ui bench bench-tools container clean

## help: list these targets with one line each
help:
	@sed -n 's/^## \([a-z-]*\): \(.*\)/\1\t\2/p' $(MAKEFILE_LIST) | awk -F'\t' '{ printf "  %-12s %s\n", $$1, $$2 }'

# Bytecode is compiled at install time: where PYTHONDONTWRITEBYTECODE is set (as on our CI machines)
# Python never caches it, and every Dagster run process would recompile dagster, MLflow, LightGBM ...
# from source (4-6x slower imports; docs/benchmarks.md, "Import time").
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	@# The venv's own tooling as `python -m venv` seeds it is old (Python 3.11: pip 23.2, setuptools 65.5,
	@# both with published advisories); these floors are their fixed releases, --upgrade takes the newest.
	$(BIN)/uv pip install --python $(BIN)/python --quiet --upgrade "pip>=25.3" "setuptools>=78.1.1"
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e ".[dev]"
	$(BIN)/python -m compileall -q churn_assets data_contracts bento benchmarks >/dev/null
	$(BIN)/python -m pip check
	@touch $(STAMP)

## install: create .venv with the package and its dev extra (uv; re-runs when pyproject.toml changes)
install: $(STAMP)

## audit: known vulnerabilities of every package installed in .venv (pip-audit, PyPI's advisory data; network)
audit: install
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off

## services: start Redis and PostgreSQL unless they answer, install Debian's chromium and prometheus if missing (root)
services:
	@if ! redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping 2>/dev/null | grep -q PONG; then \
		echo "starting redis on port $(REDIS_PORT)"; \
		$(SUDO) mkdir -p $(REDIS_DIR) $(REDIS_LOG_DIR) && \
		$(SUDO) redis-server --daemonize yes --bind 127.0.0.1 -::1 --port $(REDIS_PORT) --save "" --appendonly no --dir $(REDIS_DIR) --logfile $(REDIS_LOG_DIR)/ci.log \
		|| { echo "redis-server failed to start (log: $(REDIS_LOG_DIR)/ci.log)" >&2; exit 1; }; \
	fi
	@if ! pg_isready -q -h $(PG_HOST) -p $(PG_PORT); then \
		echo "starting postgresql"; \
		$(SUDO) pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start \
		|| { echo "pg_ctlcluster failed to start PostgreSQL" >&2; exit 1; }; \
	fi
	@for _ in $$(seq $(SERVICE_WAIT)); do \
		redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping 2>/dev/null | grep -q PONG \
		&& pg_isready -q -h $(PG_HOST) -p $(PG_PORT) && break; \
		sleep 1; \
	done; \
	redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping 2>/dev/null | grep -q PONG \
		|| { echo "Redis does not answer on 127.0.0.1:$(REDIS_PORT) after $(SERVICE_WAIT) s (log: $(REDIS_LOG_DIR)/ci.log)" >&2; exit 1; }; \
	pg_isready -q -h $(PG_HOST) -p $(PG_PORT) \
		|| { echo "PostgreSQL does not answer on $(PG_HOST):$(PG_PORT) after $(SERVICE_WAIT) s (log: /var/log/postgresql/)" >&2; exit 1; }
	@# The UI test (tests/ui) drives this Debian Chromium through Playwright's executable_path.
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing chromium with apt-get (for the UI test)"; \
		$(APT_GET) update -qq >/dev/null && $(APT_GET) install -y -qq chromium >/dev/null \
		|| { echo "apt-get could not install chromium" >&2; exit 1; }; \
		test -x $(CHROMIUM) || { echo "chromium installed, but $(CHROMIUM) is missing" >&2; exit 1; }; \
	fi
	@# The Prometheus tests (tests/deploy/test_prometheus.py, tests/serving/test_prometheus_live.py) run Debian's
	@# promtool and prometheus binaries against deploy/prometheus; the test starts its own Prometheus on a free
	@# port (where systemd runs, the package also enables a system prometheus service on :9090, unused here).
	@if [ ! -x $(PROMTOOL) ]; then \
		echo "installing prometheus with apt-get (for the Prometheus tests)"; \
		$(APT_GET) update -qq >/dev/null && $(APT_GET) install -y -qq prometheus >/dev/null \
		|| { echo "apt-get could not install prometheus" >&2; exit 1; }; \
		test -x $(PROMTOOL) || { echo "prometheus installed, but $(PROMTOOL) is missing" >&2; exit 1; }; \
	fi

## demo: history -> main job -> champion v1 -> bento -> 16 production weeks driven by the code location's sensors (ticked in process); prints the weeks' table + status report
demo: install
	$(BIN)/churnops demo

## test: services + lint + typecheck + contract samples + the whole test suite (all markers), in 2 processes
test: install services lint typecheck contracts
	$(BIN)/pytest -q -m "" -n $(TEST_PROCESSES) --dist loadgroup tests

## test-fast: the test suite without the e2e and service-marked tests (starts no services)
test-fast: install
	$(BIN)/pytest -q -m "not e2e and not service" -n $(TEST_PROCESSES) --dist loadgroup tests

## lint: ruff check + ruff format --check + the import-linter layer contracts
lint: install
	$(BIN)/ruff check churn_assets data_contracts tests benchmarks bento
	$(BIN)/ruff format --check churn_assets data_contracts tests benchmarks bento
	$(BIN)/lint-imports

## format: ruff --fix and ruff format, in place
format: install
	$(BIN)/ruff check --fix churn_assets data_contracts tests benchmarks bento
	$(BIN)/ruff format churn_assets data_contracts tests benchmarks bento

## typecheck: mypy on churn_assets and data_contracts
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

## bench: full-scale foundation benchmark (500,000 customers: simulate history + main job; time and peak RSS per stage)
bench: install
	$(BIN)/python -m benchmarks.full_scale_pipeline

## bench-tools: install the benchmarks' external tools from Debian (wrk, for benchmarks.serving.run; root)
bench-tools:
	@command -v wrk >/dev/null || { \
		echo "installing wrk with apt-get"; \
		$(APT_GET) update -qq >/dev/null && $(APT_GET) install -y -qq wrk >/dev/null; }
	@command -v wrk >/dev/null || { echo "wrk is still missing after apt-get" >&2; exit 1; }

## container: build the platform image (deploy/Dockerfile) and the serving image (the newest bento) with docker, podman or buildah
container: install
	$(BIN)/churnops deploy images $(if $(CONTAINER_BUILDER),--builder $(CONTAINER_BUILDER)) $(foreach i,$(CONTAINER_IMAGES),--image $(i)) $(if $(CONTAINER_BASE_IMAGE),--base-image $(CONTAINER_BASE_IMAGE))

## clean: delete all local state (.churnops/); keeps .venv
clean:
	rm -rf .churnops
