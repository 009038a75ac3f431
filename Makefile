# The two set-up commands: `make demo` and `make test`. Both create .venv from nothing.
# torch is installed first and pinned to the CPU build on this machine's disk, so
# nothing later can make pip resolve a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH ?= torch==2.13.0
PLUGINS := plugins/cpu-reference plugins/torch-fallback plugins/triton-gpu plugins/cupy-cuda plugins/cpu-native
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

BENCH_ARGS := -p no:cacheprovider -o addopts= -q --benchmark-only --benchmark-columns=min,median,rounds \
	--benchmark-max-time=1.0 --benchmark-min-rounds=10
FINGERPRINT = $(shell $(PY) -c "from qcore.hardware import detect; print(detect().fingerprint)")

bench: venv
	mkdir -p .benchmarks bench/results
	$(PY) -m pytest bench/test_linear.py $(BENCH_ARGS) --benchmark-json=.benchmarks/linear.json
	$(PY) bench/report.py --json .benchmarks/linear.json --title "qcore linear, CPU" \
		--out bench/results/linear-cpu-$(FINGERPRINT).md
	if [ -f bench/test_minilm.py ] && [ -f $(VENV)/.demo ]; then \
		$(PY) -m pytest bench/test_minilm.py $(BENCH_ARGS) --benchmark-json=.benchmarks/minilm.json && \
		$(PY) bench/report.py --json .benchmarks/minilm.json --targets none --baseline "the fp32 model" \
			--title "qcore MiniLM end to end, CPU" \
			--out bench/results/minilm-cpu-$(FINGERPRINT).md; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
