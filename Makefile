# kernelshape: the two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test install install-dev lint bench plots clean

$(VENV)/.created:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q 'torch==2.13.0' || echo "torch 2.13.0 not available: PyTorch export tests will be skipped"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/kernelshape demo

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check kernelshape tests benchmarks

test: $(VENV)/.installed-dev lint
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q

bench: $(VENV)/.installed-dev
	OPENBLAS_NUM_THREADS=1 $(PY) -m benchmarks

plots: $(VENV)/.installed
	$(VENV)/bin/kernelshape plot all -o plots

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
