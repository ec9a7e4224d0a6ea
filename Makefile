# The README's two commands. Both set everything up from scratch on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test venv lint clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m visionauto.demo

test: $(STAMP)
	$(PY) -m pytest -m "not gpu and not network"

lint: $(STAMP)
	$(VENV)/bin/ruff check visionauto tests scripts
	$(VENV)/bin/ruff format --check visionauto tests scripts

bench: $(STAMP)
	$(PY) scripts/bench_classification.py

clean:
	rm -rf $(VENV) outputs multirun
