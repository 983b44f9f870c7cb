# Two commands for a fresh clone: `make demo` and `make test`. Both build .venv first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
BENCH_HOME ?= .bench-home
STAMP  := $(VENV)/.quantcrew-installed
# the suite on every core, at most 4 workers; each test module stays on one worker (its fixtures start once)
PYTEST_WORKERS ?= -n auto --maxprocesses 4 --dist loadscope

.PHONY: install demo test test-fast server bench lint typecheck clean constraints

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel; an unpinned torch would pull GBs of CUDA packages.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	# every other package at the version the suite passed with (constraints.txt; `make constraints` refreshes it)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[server,dev,ray]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	# trains what the crew consults once per symbol and data span (skipped when already there)
	$(VENV)/bin/quantcrew setup --symbols SP500,NASDAQ
	$(VENV)/bin/quantcrew run --symbols SP500,NASDAQ

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_WORKERS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_WORKERS)

server: $(STAMP)
	$(VENV)/bin/quantcrew-server

bench: $(STAMP)
	$(PY) bench/setup_demo.py
	$(PY) bench/regime_accuracy.py
	$(PY) bench/regime_latency.py
	$(PY) bench/tool_overhead.py
	if command -v wrk >/dev/null; then $(PY) bench/light_throughput.py; else echo "bench/light_throughput.py skipped: it needs wrk (apt-get install wrk)"; fi
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
	$(PY) bench/prediction_log_overhead.py
	$(PY) bench/drift_scenario.py
	$(PY) bench/alert_storm.py
	$(PY) bench/retraining_scenario.py
	$(PY) bench/mcp_roundtrip.py
	$(PY) bench/failover.py
	if command -v wrk >/dev/null; then $(PY) bench/ray_serve.py; else echo "bench/ray_serve.py skipped: it needs wrk (apt-get install wrk)"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check quantcrew tests bench examples
	$(VENV)/bin/lint-imports --config .importlinter

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Re-resolve every dependency to its newest allowed version in a scratch venv, run the suite there,
# and only if it passes, pin what it installed in constraints.txt.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	.venv-constraints/bin/python -m pip install --quiet --disable-pip-version-check -e ".[server,dev,ray]"
	.venv-constraints/bin/python -m pytest -q $(PYTEST_WORKERS)
	{ echo "# Versions the whole suite passed with (Python 3.11). Used by make and CI: pip install -c constraints.txt."; \
	  echo "# Refresh: make constraints (see README, 'Reproducible installs')."; \
	  .venv-constraints/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' | grep -v '^#'; } > constraints.txt
	rm -rf .venv-constraints
