# kernelshape: the two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test install install-dev lint bench plots study study-quick clean

$(VENV)/.created:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[dev,jax,data]'
	$(PIP) install -q 'torch==2.13.0' || echo "torch 2.13.0 not available: PyTorch export tests will be skipped"
	# tf-keras: TensorFlow Probability (under kfac-jax) needs it once TensorFlow is imported
	$(PIP) install -q 'tensorflow-cpu==2.21.0' 'tf-keras==2.21.0' || echo "tensorflow-cpu 2.21.0 not available: TensorFlow export tests will be skipped"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/kernelshape demo

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check kernelshape tests benchmarks

test: $(VENV)/.installed-dev lint
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

bench: $(VENV)/.installed-dev
	OPENBLAS_NUM_THREADS=1 $(PY) -m benchmarks

plots: $(VENV)/.installed
	$(VENV)/bin/kernelshape plot all -o plots

STUDIES ?= core_mlp50_mnist1d kfac_norm_mlp50_mnist1d relu_mlp50_mnist1d deep_mlp100_mnist1d datasets_mlp50 convnet_mnist1d variants_mlp50_mnist1d

# The issue-8 study set (resumable; results in studies/results/NAME). `make study-quick`: minutes.
study: $(VENV)/.installed-dev
	for s in $(STUDIES); do OPENBLAS_NUM_THREADS=1 $(PY) -m studies.run studies/$$s.json --jobs 2 || exit 1; done

study-quick: $(VENV)/.installed-dev
	for s in $(STUDIES); do OPENBLAS_NUM_THREADS=1 $(PY) -m studies.run studies/$$s.json --quick --out /tmp/kernelshape-study-quick/$$s || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
