# The two commands a newcomer needs (see README):  make run   |   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WORKDIR ?= runs/tiny
CONFIG  ?= configs/tiny.yaml

.PHONY: install run test check clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes: both commands stay idempotent and fast. uv installs
# what pip would, in a sixth of the time (bench/install_time.sh: 62 s against 412 s from empty
# caches, 2026-12-07); --native-tls reads the system's certificates, as pip does.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade uv
	$(BIN)/uv pip install -q --native-tls --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded tiny profile: the ten-round bootstrap loop as a Prefect flow
# (seed, then train / generate / judge / cycle / evaluate / commit per round). Re-running
# skips committed rounds and finished shards.
run: $(STAMP)
	$(BIN)/layerboot run --config $(CONFIG) --workdir $(WORKDIR)
	$(BIN)/layerboot review --round 0 --config $(CONFIG) --workdir $(WORKDIR)

test: $(STAMP)
	.ci/system-deps
	$(BIN)/python -m pytest -q

# The developers' fast lane: the tests that are neither `slow` nor `service` (aim: <= 3 min on 2
# cores). `make test` stays the full suite CI runs.
check: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not service"

clean:
	rm -rf $(VENV) runs .pytest_cache
