#!/usr/bin/env bash
# One GPU run: GPU tests, conformance of the GPU backends, the linear benchmark against
# fp16 torch.matmul, and the matcher's explanations. Run from the repo root:
#
#     bash bench/gpu.sh [OUT_DIR]        # default bench/results/gpu; PYTHON=... picks the interpreter
#
# Works offline: it uses the torch/CuPy/Triton the machine has, installs qcore and the
# plugins from this checkout with --no-deps, and says which packages are missing.
# Every step runs even when an earlier one failed; the summary lists each step's status
# and the script exits non-zero if any failed. Files kept (at most 8) go to OUT_DIR:
#   summary.txt, log.txt, gpu-tests.txt, conformance-triton-gpu.md, conformance-cupy-cuda.md
#   (the Markdown of each `qcore conformance --report` directory; the JSON/XML stay in a temp dir),
#   linear-<device>.json, linear-<device>.md, explain-<device>.txt
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
SUMMARY="$OUT/summary.txt"
: >"$LOG"
: >"$SUMMARY"
: >"$OUT/gpu-tests.txt"
FAILED=0
export PYTHONUNBUFFERED=1 QCORE_CACHE_DIR="${QCORE_CACHE_DIR:-$(mktemp -d)}"

note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME TIMEOUT_S COMMAND...: run, log (and copy to $TEE if set), record status; never aborts the script.
step() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    local log=${STEPLOG:-$LOG}
    echo "=== $name: $*" | tee -a "$log"
    timeout -s INT -k 15 "$limit" "$@" 2>&1 | tee -a "$log" ${TEE:+"$TEE"} >/dev/null
    rc=$?
    if [ $rc -eq 0 ]; then
        note "PASS  $name ($(( $(date +%s) - start )) s)"
    else
        [ $rc -eq 124 ] && echo "(timed out after ${limit} s)" >>"$log"
        note "FAIL  $name (exit $rc, $(( $(date +%s) - start )) s; see log.txt)"
        FAILED=1
    fi
}

CLI=("$PY" -c 'import sys; from qcore.cli import main; sys.exit(main())')

note "qcore GPU run, $(date -u +%Y-%m-%dT%H:%M:%SZ), python: $(command -v "$PY")"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$LOG" 2>&1; then
    note "FAIL  torch with CUDA: not importable or no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1))"
    exit 1
fi
DEVICE_NAME=$("$PY" -c 'import torch; print(torch.cuda.get_device_name())')
DEVICE=$(echo "$DEVICE_NAME" | tr 'A-Z' 'a-z' | sed -E 's/^nvidia //; s/[^a-z0-9]+/-/g; s/^-|-$//g')
note "device: $DEVICE_NAME; $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)')"

MISSING=$("$PY" - <<'PYEOF'
import importlib.util
need = {"pluggy": "pluggy", "attrs": "attrs", "yaml": "pyyaml", "safetensors": "safetensors", "rich": "rich",
        "numpy": "numpy", "pytest": "pytest", "pytest_benchmark": "pytest-benchmark", "hypothesis": "hypothesis",
        "triton": "triton", "cupy": "cupy-cuda12x/cupy-cuda13x", "setuptools": "setuptools"}
print(" ".join(dist for mod, dist in need.items() if importlib.util.find_spec(mod) is None))
PYEOF
)
if [ -n "$MISSING" ]; then
    note "MISSING packages (no network here; the steps that need them fail): $MISSING"
fi

INSTALLED=$("$PY" - <<'PYEOF'
import importlib.metadata as md
names = ["qcore", "qcore-cpu-reference", "qcore-torch-fallback", "qcore-triton-gpu", "qcore-cupy-cuda"]
have = {d.metadata["Name"] for d in md.distributions()}
print("yes" if all(n in have for n in names) else "no")
PYEOF
)
if [ "$INSTALLED" != "yes" ]; then
    step "install qcore + plugins (pip --no-deps -e)" 300 "$PY" -m pip install --no-deps --no-build-isolation \
        --no-index -q -e . -e plugins/cpu-reference -e plugins/torch-fallback -e plugins/triton-gpu -e plugins/cupy-cuda
fi

step "qcore backends" 30 "${CLI[@]}" backends

# The benchmark first, alone on an idle GPU (SIGINT at its limit still writes the JSON).
step "benchmark linear on cuda" ${BENCH_LIMIT:-180} "$PY" -m pytest bench/test_gpu_linear.py -q -rs -p no:cacheprovider \
    --benchmark-only --benchmark-columns=min,median,rounds --benchmark-json="$OUT/linear-$DEVICE.json"
step "benchmark report" 30 "$PY" bench/report.py --json "$OUT/linear-$DEVICE.json" --baseline "torch.matmul fp16" \
    --targets gpu --title "qcore linear on $DEVICE_NAME" --out "$OUT/linear-$DEVICE.md"
EXPLAIN="$OUT/explain-$DEVICE.txt"
: >"$EXPLAIN"
TEE="$EXPLAIN" step "explain w4a16 1,4096,4096" 30 \
    "${CLI[@]}" backends --explain w4a16 --shape 1,4096,4096 --device cuda
TEE="$EXPLAIN" step "explain w8a8-dynamic 4096,4096,4096" 30 \
    "${CLI[@]}" backends --explain w8a8-dynamic --shape 4096,4096,4096 --device cuda

# Correctness: three processes side by side on the one GPU, each with its own log, merged after.
PARALLEL=$(mktemp -d)
STEPLOG="$PARALLEL/tests.log" TEE="$OUT/gpu-tests.txt" step "GPU tests (pytest -m gpu tests/gpu)" ${CHECK_LIMIT:-120} \
    "$PY" -m pytest -m gpu tests/gpu -q -rs -p no:cacheprovider &
for backend in triton-gpu cupy-cuda; do
    (
        REPORT=$(mktemp -d)
        STEPLOG="$PARALLEL/$backend.log" step "conformance $backend" ${CHECK_LIMIT:-120} \
            "${CLI[@]}" conformance "$backend" --device cuda --report "$REPORT"
        cp "$REPORT/conformance.md" "$OUT/conformance-$backend.md" 2>/dev/null \
            || note "      (no conformance.md in the report of $backend)"
        grep -m1 -E "passed|failed" "$OUT/conformance-$backend.md" 2>/dev/null | sed 's/^/      /' | tee -a "$SUMMARY"
    ) &
done
wait
cat "$PARALLEL"/*.log >>"$LOG"

if [ -f "$OUT/linear-$DEVICE.md" ]; then
    sed -n '/## Targets/,$p' "$OUT/linear-$DEVICE.md" | tee -a "$SUMMARY"
fi
note "outputs in $OUT: $(ls "$OUT" | tr '\n' ' ')"
if [ $FAILED -ne 0 ] || grep -q '^FAIL' "$SUMMARY"; then
    note "RESULT: some steps failed"
    exit 1
fi
note "RESULT: all steps passed"
