# tinyspp: the README's two commands are `make demo` and `make test`; both set everything up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
EXTRAS ?= dev

.PHONY: demo test lint test-gpu bench notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(STAMP)
	$(PY) -m tinyspp demo

lint: $(STAMP)
	$(PY) -m ruff check tinyspp tests

test: lint
	$(PY) -m pytest

# The CuPy suite: run on a machine with an NVIDIA GPU.
test-gpu: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,gpu]"
	$(PY) -m pytest -m gpu tests -ra

bench: $(STAMP)
	$(PY) -m tinyspp.bench

notebooks: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,notebooks]"
	TINYSPP_QUICK=0 $(PY) notebooks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
