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

.PHONY: venv test demo bench bench-avx2 clean

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

$(VENV)/.bench: $(VENV)/.installed
	$(PIP) install -q $(TORCH) -e '.[test,bench]'
	touch $@

BENCH_ARGS := -p no:cacheprovider -o addopts= -q --benchmark-only --benchmark-columns=min,median,rounds \
	--benchmark-max-time=1.0 --benchmark-min-rounds=10
FINGERPRINT = $(shell $(PY) -c "from qcore.hardware import detect; print(detect().fingerprint)")
# A CPU without AVX-512 or VNNI, on this one: MKL, ATen and cpu-native held to AVX2 (fbgemm and ORT are not), with
# an autotune cache of its own (the hardware fingerprint does not see the limits).
AVX2_ONLY := QCORE_CPU_NATIVE_ISA=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \
	QCORE_CACHE_DIR=$(CURDIR)/.benchmarks/cache-avx2-only

bench: $(VENV)/.bench
	mkdir -p .benchmarks bench/results
	$(PY) -m pytest bench/test_linear.py $(BENCH_ARGS) --benchmark-json=.benchmarks/linear.json
	$(PY) bench/report.py --json .benchmarks/linear.json --title "qcore linear, CPU" \
		--out bench/results/linear-cpu-$(FINGERPRINT).md
	$(PY) -m pytest bench/test_cpu_native.py $(BENCH_ARGS) --benchmark-json=.benchmarks/cpu-native.json
	$(PY) bench/report.py --json .benchmarks/cpu-native.json --title "cpu-native by ISA path, CPU" \
		--out bench/results/cpu-native-cpu-$(FINGERPRINT).md
	$(PY) -m pytest bench/test_minilm.py $(BENCH_ARGS) --benchmark-json=.benchmarks/minilm.json
	$(PY) bench/report.py --json .benchmarks/minilm.json --targets none --baseline "the fp32 model" \
		--title "qcore MiniLM end to end, CPU" --out bench/results/minilm-cpu-$(FINGERPRINT).md

bench-avx2: $(VENV)/.bench
	mkdir -p .benchmarks bench/results
	$(AVX2_ONLY) $(PY) -m pytest bench/test_cpu_native.py $(BENCH_ARGS) --benchmark-json=.benchmarks/cpu-native-avx2.json
	$(PY) bench/report.py --json .benchmarks/cpu-native-avx2.json --title "cpu-native held to AVX2, CPU" \
		--out bench/results/cpu-native-avx2-only-$(FINGERPRINT).md
	$(AVX2_ONLY) $(PY) -m pytest bench/test_minilm.py $(BENCH_ARGS) -k "test_minilm_fp32 or w8a8-dynamic" \
		--benchmark-json=.benchmarks/minilm-avx2.json
	$(PY) bench/report.py --json .benchmarks/minilm-avx2.json --targets none --baseline "the fp32 model" \
		--title "qcore MiniLM end to end held to AVX2, CPU" --out bench/results/minilm-avx2-only-$(FINGERPRINT).md

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
