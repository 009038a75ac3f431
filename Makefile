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

.PHONY: venv test demo tune-demo bench bench-avx2 bench-1thread clean

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

# qcore tune on MiniLM for size and for latency, next to every uniform recipe (figures to bench/results/).
TUNE_ARGS ?=
tune-demo: $(VENV)/.demo
	$(PY) -m qcore.demo.tune $(TUNE_ARGS)

# The benchmarks run in an environment of their own: the ONNX Runtime peer (sentence-transformers' ONNX
# backend, through optimum-onnx) pins an older transformers than the one the tests and the demo use.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
$(BENCH_VENV)/.installed: pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip --disable-pip-version-check install -q $(TORCH)
	$(BENCH_PY) -m pip --disable-pip-version-check install -q $(TORCH) -e '.[test,bench]' $(addprefix -e ,$(PLUGINS))
	touch $@

BENCH_ARGS := -p no:cacheprovider -o addopts= -q --benchmark-only --benchmark-columns=min,median,rounds \
	--benchmark-max-time=1.0 --benchmark-min-rounds=10
FINGERPRINT = $(shell $(BENCH_PY) -c "from qcore.hardware import detect; print(detect().fingerprint)")
MINILM_REPORT := --targets none --baseline "the fp32 model"
# A CPU without AVX-512 or VNNI, on this one: MKL, ATen and cpu-native held to AVX2 (fbgemm and ORT are not).
AVX2_ONLY := QCORE_CPU_NATIVE_ISA=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
# One thread, timed in CPU time: what each kernel costs a core, unmoved by other processes on a shared machine.
ONE_THREAD := OMP_NUM_THREADS=1
ONE_THREAD_ARGS := --benchmark-timer=time.process_time

# $(call bench_run,RESULT,TEST FILE,TITLE,REPORT ARGS,ENVIRONMENT,PYTEST ARGS): bench/results/RESULT-<fingerprint>.md.
# Each result autotunes into a cache of its own: the hardware fingerprint does not see thread or ISA limits.
define bench_run
	QCORE_CACHE_DIR=$(CURDIR)/.benchmarks/cache-$(1) $(5) $(BENCH_PY) -m pytest $(2) $(BENCH_ARGS) $(6) \
		--benchmark-json=.benchmarks/$(1).json
	$(BENCH_PY) bench/report.py --json .benchmarks/$(1).json --title "$(3)" $(4) --out bench/results/$(1)-$(FINGERPRINT).md
endef

bench: $(BENCH_VENV)/.installed
	mkdir -p .benchmarks bench/results
	$(call bench_run,linear-cpu,bench/test_linear.py,qcore linear CPU)
	$(call bench_run,cpu-native-cpu,bench/test_cpu_native.py,cpu-native by ISA path CPU)
	$(call bench_run,minilm-cpu,bench/test_minilm.py,qcore MiniLM end to end CPU,$(MINILM_REPORT))

bench-avx2: $(BENCH_VENV)/.installed
	mkdir -p .benchmarks bench/results
	$(call bench_run,cpu-native-avx2-only,bench/test_cpu_native.py,cpu-native held to AVX2 CPU,,$(AVX2_ONLY))
	$(call bench_run,minilm-avx2-only,bench/test_minilm.py,qcore MiniLM end to end held to AVX2 CPU,\
		$(MINILM_REPORT),$(AVX2_ONLY),-k "test_minilm_fp32 or w8a8-dynamic")

bench-1thread: $(BENCH_VENV)/.installed
	mkdir -p .benchmarks bench/results
	$(call bench_run,cpu-native-1thread,bench/test_cpu_native.py,cpu-native by ISA path one thread CPU time,,\
		$(ONE_THREAD),$(ONE_THREAD_ARGS))
	$(call bench_run,minilm-1thread,bench/test_minilm.py,qcore MiniLM end to end one thread CPU time,\
		$(MINILM_REPORT),$(ONE_THREAD),$(ONE_THREAD_ARGS))
	$(call bench_run,cpu-native-avx2-only-1thread,bench/test_cpu_native.py,\
		cpu-native held to AVX2 one thread CPU time,,$(ONE_THREAD) $(AVX2_ONLY),$(ONE_THREAD_ARGS))
	$(call bench_run,minilm-avx2-only-1thread,bench/test_minilm.py,\
		qcore MiniLM end to end held to AVX2 one thread CPU time,$(MINILM_REPORT),$(ONE_THREAD) $(AVX2_ONLY),\
		$(ONE_THREAD_ARGS) -k "test_minilm_fp32 or w8a8-dynamic")

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .benchmarks
