# The two set-up commands: `make demo` and `make test`. Both create .venv from nothing.
# torch is installed first and pinned to the CPU build on this machine's disk, so
# nothing later can make pip resolve a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH ?= torch==2.13.0
PLUGINS := plugins/cpu-reference plugins/torch-fallback plugins/triton-gpu plugins/cupy-cuda
PYTEST_ARGS ?=

.PHONY: venv test demo bench clean

$(VENV)/.installed: pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q $(TORCH) -e '.[test]' $(addprefix -e ,$(PLUGINS))
	touch $@

venv: $(VENV)/.installed

$(VENV)/.demo: $(VENV)/.installed
	$(PIP) install -q $(TORCH) -e '.[test,demo]'
	touch $@

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.demo
	$(PY) -m qcore.demo

bench: venv
	$(PY) -m pytest bench -p no:cacheprovider --benchmark-only --benchmark-columns=min,median,rounds -q
	$(PY) -m bench.report

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
