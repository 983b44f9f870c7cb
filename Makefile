# Two commands for a fresh clone: `make demo` and `make test`. Both build .venv first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
BENCH_HOME ?= .bench-home
STAMP  := $(VENV)/.quantcrew-installed

.PHONY: install demo test test-fast server bench lint typecheck clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel; an unpinned torch would pull GBs of CUDA packages.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[server,dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	# trains what the crew consults once per symbol and data span (skipped when already there)
	$(VENV)/bin/quantcrew setup --symbols SP500,NASDAQ
	$(VENV)/bin/quantcrew run --symbols SP500,NASDAQ

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

server: $(STAMP)
	$(VENV)/bin/quantcrew-server

bench: $(STAMP)
	$(PY) bench/setup_demo.py
	$(PY) bench/regime_accuracy.py
	$(PY) bench/regime_latency.py
	$(PY) bench/crew_run.py
	$(PY) bench/import_cost.py
	$(PY) bench/var_quality.py
	$(PY) bench/shrinkage.py
	$(PY) bench/risk_latency.py
	$(PY) bench/bandit_regret.py
	$(PY) bench/rl_agents.py
	$(PY) bench/rl_agents.py --algo dqn --markets sp500
	$(PY) bench/feature_speed.py
	$(PY) bench/ensemble_speed.py
	$(PY) bench/ensemble_calibration.py
	$(PY) bench/batching.py
	$(PY) bench/execution_latency.py
	$(PY) bench/walk_forward_markets.py --home $(BENCH_HOME)
	$(PY) bench/scheduler_soak.py

lint: $(STAMP)
	$(VENV)/bin/ruff check quantcrew tests bench examples
	$(VENV)/bin/lint-imports --config .importlinter

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
