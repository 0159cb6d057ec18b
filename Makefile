# Two commands do all the set-up on a fresh machine:
#   make test   create .venv (if missing), install kbnn with its dev extras, run the tests
#   make demo   same set-up, then run the main job: `kbnn demo` (train on digits, convert, verify, report)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kbnn-installed

.PHONY: install test test-slow demo lint clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools>=64" wheel
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

demo: $(STAMP)
	$(VENV)/bin/kbnn demo

lint: $(STAMP)
	$(PY) -m ruff check kbnn apps zoo converters tests examples benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info demo_out .pytest_cache
