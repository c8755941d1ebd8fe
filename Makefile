# Two entry points, each installs what it needs into ./.venv first:
#   make demo   - draw the built-in sample, index it, query it, evaluate the presets
#   make test   - lint and run the whole test suite
#   make test-fast - lint and run all but the slow and weights tests
# Neither activates the venv: run `. .venv/bin/activate` to type `lookalike`, or call
# `.venv/bin/lookalike` (the demo prints its commands in the form that works).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch; a plain `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,ann,ray,milvus,export]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lookalike demo --out demo-out

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments
	$(VENV)/bin/ruff format --check src tests benchmarks experiments
	$(VENV)/bin/pytest

test-fast: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments
	$(VENV)/bin/ruff format --check src tests benchmarks experiments
	# Two workers (pytest-xdist): the tests wait on child processes as much as they compute.
	$(VENV)/bin/pytest -m "not slow and not weights" -n 2

clean:
	rm -rf $(VENV) demo-out .pytest_cache
