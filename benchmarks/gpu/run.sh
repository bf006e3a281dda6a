#!/usr/bin/env bash
# The GPU benchmark's command on the device machine, from the repository root, after benchmarks/gpu/pack.py:
#
#   run(carry=[".gpu"], timeout_s=600, command="bash benchmarks/gpu/run.sh")
#
# Installs the carried wheels into /tmp/site (the device README's recipe), checks that Keras, the package,
# JAX and PyTorch import and see the GPU, then trains under JAX and then PyTorch (train.py, float32 and
# mixed_bfloat16 each), each backend in its share of BUDGET seconds. Writes into $OUT: nvidia-smi.txt,
# jax.json, jax.log, torch.json, torch.log (and a precision's part, jax.json.<precision>.json, only if
# killed). Arguments are passed to both train.py runs (e.g. --epochs 20 --pad-to 64).
# Here, for a dry run on a CPU: SKIP_INSTALL=1 ALLOW_CPU=1 PYTHONPATH=tests/no_tensorflow BUDGET=420 \
#   OUT=/tmp/out bash benchmarks/gpu/run.sh --preset tiny --epochs 2 --folds 1 --limit 48 --precision float32
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-benchmarks/gpu/out}
BUDGET=${BUDGET:-540}  # seconds for everything below; the device tool's command limit is 600
mkdir -p "$OUT"
start=$(date +%s)
if [ -z "${SKIP_INSTALL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl || { echo "wheel install failed: run benchmarks/gpu/pack.py and carry .gpu"; exit 2; }
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT/nvidia-smi.txt" 2>&1
cat "$OUT/nvidia-smi.txt"
for backend in jax torch; do
  KERAS_BACKEND=$backend python3 - <<'EOF' || exit 3
import os, keras, msir_keras.engine, msir_keras.data  # noqa: F401
backend = keras.backend.backend()
if backend == "jax":
    import jax
    gpu, where = jax.default_backend() == "gpu", f"jax {jax.__version__} {jax.devices()}"
else:
    import torch
    gpu, where = torch.cuda.is_available(), f"torch {torch.__version__} cuda {torch.cuda.is_available()}"
print(f"preflight: keras {keras.__version__} on {backend}: {where}", flush=True)
if not gpu and not os.environ.get("ALLOW_CPU"):
    raise SystemExit(f"preflight: {backend} sees no GPU (ALLOW_CPU=1 runs anyway)")
EOF
done
left=$((BUDGET - ($(date +%s) - start)))
KERAS_BACKEND=jax timeout -k 5 $((left / 2 + 30)) python3 benchmarks/gpu/train.py --budget-s $((left / 2)) \
  --out "$OUT/jax.json" "$@" 2>&1 | tee "$OUT/jax.log"
left=$((BUDGET - ($(date +%s) - start)))
[ "$left" -ge 60 ] || { echo "BUDGET: $left s left, PyTorch not run"; left=0; }
[ "$left" -eq 0 ] || KERAS_BACKEND=torch timeout -k 5 $((left + 30)) python3 benchmarks/gpu/train.py --budget-s $left \
  --out "$OUT/torch.json" "$@" 2>&1 | tee "$OUT/torch.log"
echo
echo "=== summary ($(($(date +%s) - start)) s)"
python3 benchmarks/gpu/train.py --summarize "$OUT/jax.json" "$OUT/torch.json"
