#!/usr/bin/env bash
# The GPU measurements the README reports, in one run on a machine that already has the project:
# the train-step table (small model, bfloat16, against the PyTorch DiT; XLA vs cuDNN attention,
# unrolled vs scanned blocks) at L = 1024 (batch 32) and L = 128 (batch 64), the paper's per-device
# batches; the fused loss at L = 1024; the attention tests that need a GPU; a short sampler table.
# Most important first; each part has its own time limit and all of them share BUDGET_S (default
# 540 s), so that a slow part cannot take the others' results with it and the whole run fits one
# 10-minute call. The bench prints each row as it is measured, so a part cut short keeps its rows.
#
#   bash launch/bench_gpu.sh OUT_DIR [WHEELS_DIR]
#
# WHEELS_DIR: wheels to install first with --no-deps into a temporary site (a machine without a
# package index that lacks some of the project's dependencies; never jax, jaxlib or torch).
set -euo pipefail
out=${1:?usage: bash launch/bench_gpu.sh OUT_DIR [WHEELS_DIR]}
wheels=${2:-}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$out"
if [[ -n "$wheels" ]]; then
  site=$(mktemp -d)/site
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# JAX would take 75% of the GPU up front; the PyTorch model runs in the same process after it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
deadline=$((SECONDS + ${BUDGET_S:-540}))

part() {  # part NAME SECONDS COMMAND...: run it, keep its output in OUT/NAME.txt, go on if it fails
  local name=$1 limit=$2 left=$((deadline - SECONDS))
  shift 2
  if ((left < 20)); then
    echo "== $name skipped: the ${BUDGET_S:-540}s budget is spent" | tee "$out/$name.txt"
    return
  fi
  ((limit < left)) || limit=$left
  echo "== $name ($(date -u +%FT%TZ), up to ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt" || echo "== $name failed or ran past ${limit}s"
}

bench_train=(python3 -m mdlm_jax.tools.bench train --size small --dtype bfloat16 --steps 10)
part versions 30 bash -c 'nvidia-smi; python3 -c "import sys, jax, flax, optax, torch; print(sys.version);
print(\"jax\", jax.__version__, \"flax\", flax.__version__, \"optax\", optax.__version__, \"torch\", torch.__version__,
jax.devices())"'
# Unrolled and scanned blocks both: on XLA:CPU the unrolled backward fuses the residual-stream
# cotangent of every later block into each weight-gradient transpose (see the README).
part train_1024 200 "${bench_train[@]}" --lengths 1024 --batch 32 --vs-torch --attention-impl default,cudnn \
  --scan-blocks false,true
part train_128 90 "${bench_train[@]}" --lengths 128 --batch 64 --vs-torch --attention-impl cudnn \
  --scan-blocks false,true
part loss_chunk_1024 60 "${bench_train[@]}" --lengths 1024 --batch 32 --attention-impl cudnn --loss-chunk 256 \
  --scan-blocks true
part attention_tests 70 env JAX_PLATFORMS=cuda python3 -m pytest -q tests/test_remat_attention.py \
  -k "attention_impl_matches_xla or auto_attention"
part sample 90 python3 -m mdlm_jax.tools.bench sample --size small --lengths 1024 --num-steps 128,1000 \
  --batch 1 --dtype bfloat16 --attention-impl cudnn
