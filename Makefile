# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export CONNECTOME_HOME ?= $(CURDIR)/.connectome
export DAGSTER_HOME ?= $(CONNECTOME_HOME)/dagster
# Worker processes for the test suite (each gets its own embedded ClickHouse path).
TEST_WORKERS ?= 2

.PHONY: install demo test dev postgres-binaries chromium dagster-home clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# cect's own dependency set pins an old numpy; its data and name lists need none of it.
	$(PY) -m pip install -q --no-deps cect==0.3.5
	touch $@

install: $(VENV)/.installed

dagster-home:
	mkdir -p "$(DAGSTER_HOME)"
	cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

## make demo: build the C. elegans demo datasets and run the main job on embedded defaults
demo: install dagster-home
	$(VENV)/bin/connectome demo

## make test: install what the tests need (PostgreSQL and Chromium too) and run the whole suite
test: install postgres-binaries chromium
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -q

## make dev: the Dagster UI on 127.0.0.1 with the demo's instance
dev: install dagster-home
	@echo "Dagster UI: http://127.0.0.1:3000"
	env --default-signal=INT,TERM $(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

postgres-binaries:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing Debian's PostgreSQL server binaries"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

# The UI test drives Debian's Chromium through Playwright (never `playwright install`).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Debian's Chromium"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

clean:
	rm -rf "$(CONNECTOME_HOME)" .pytest_cache
