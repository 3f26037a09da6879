# tinyspp: the README's two commands are `make demo` and `make test`; both set everything up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
EXTRAS ?= dev

.PHONY: demo test lint test-gpu gpu-check bench notebooks docs clean

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

# One unattended run for a GPU machine: refuses to run without a CUDA device, then the CuPy
# tests (log: results/gpu-tests.log) and the GPU benchmark (results/gpu.json); fails if either
# fails. Afterwards `$(PY) -m tinyspp.apps.publish` puts the numbers into docs/kernels.md.
gpu-check: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,gpu]"
	$(PY) -c "import sys, tinyspp.backend as b; sys.exit(0 if b.gpu_available() else 'gpu-check: no CUDA device answers here')"
	mkdir -p results
	$(PY) -m pytest -m gpu tests -ra > results/gpu-tests.log 2>&1 || (tail -40 results/gpu-tests.log; exit 1)
	tail -3 results/gpu-tests.log
	$(PY) -m tinyspp.bench --gpu --only gpu --out results/gpu.json

bench: $(STAMP)
	$(PY) -m tinyspp.bench

notebooks: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,notebooks]"
	TINYSPP_QUICK=0 $(PY) notebooks/run.py

# The documentation site (docs/make_site.py): build/docs/html/index.html. Offline: MathJax comes
# from the npm registry once (cached in build/vendor); warnings are errors.
docs: $(STAMP)
	$(PY) docs/make_site.py build/docs

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
