# Vigil: `make run` starts everything on embedded defaults; `make test` runs the suite.
# Both set up what is missing first: a virtualenv with the pinned packages, and a Redis server.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg constraints.txt 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: run test bench install redis migrate clean lint

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

redis: install
	@VENV=$(VENV) scripts/ensure-redis >/dev/null

migrate: install
	$(BIN)/vigil migrate

run: install
	@VENV=$(VENV) scripts/run

# The suite runs in TEST_WORKERS pytest-xdist processes, a test module to each at a time (`--dist loadfile`: a
# module's shared stack starts once). Every process has its own Redis, PostgreSQL and var directory
# (tests/conftest.py), so they share nothing. Most of a test's time is waiting on the processes it started,
# which is why two run well on two cores. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: install redis lint
	VIGIL_REDIS_SERVER=$$(VENV=$(VENV) scripts/ensure-redis) \
	VIGIL_PROMETHEUS_SERVER=$$(scripts/ensure-prometheus) \
	VIGIL_CHROMIUM=$$(scripts/ensure-chromium) \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: install redis
	VIGIL_REDIS_SERVER=$$(VENV=$(VENV) scripts/ensure-redis) $(BIN)/python -m bench $(BENCH_ARGS)

# ruff (lint rules and format, configured in pyproject.toml) and the import-linter layer and cycle
# contracts (setup.cfg); `make test` runs this first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache
