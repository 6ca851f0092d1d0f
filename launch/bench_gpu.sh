#!/usr/bin/env bash
# The GPU measurements the README reports, in one run on a machine that already has the project:
# the train-step table (small model, L = 1024 and 128, bfloat16, against the PyTorch DiT; XLA vs
# cuDNN attention, full vs fused loss, unrolled vs scanned blocks), the sampler table, and the
# attention tests that need a GPU.
# Each part has its own time limit so that a slow one cannot take the others' results with it.
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

part() {  # part NAME SECONDS COMMAND...: run it, keep its output in OUT/NAME.txt, go on if it fails
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date -u +%FT%TZ))"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt" || echo "== $name failed or ran past ${limit}s"
}

part versions 60 bash -c 'nvidia-smi; python3 -c "import sys, jax, flax, torch; print(sys.version);
print(\"jax\", jax.__version__, \"flax\", flax.__version__, \"torch\", torch.__version__, jax.devices())"'
part train_1024 240 python3 -m mdlm_jax.bench train --size small --lengths 1024 --batch 8 --steps 10 \
  --dtype bfloat16 --vs-torch --attention-impl default,cudnn --loss-chunk 0,256
part train_128 120 python3 -m mdlm_jax.bench train --size small --lengths 128 --batch 64 --steps 10 \
  --dtype bfloat16 --vs-torch --attention-impl default,cudnn --scan-blocks false,true
part attention_tests 120 env JAX_PLATFORMS=cuda python3 -m pytest -q tests/test_remat_attention.py \
  -k "attention_impl_matches_xla or auto_attention"
part sample 300 python3 -m mdlm_jax.bench sample --size small --lengths 128,1024 --num-steps 128,1000,10000 \
  --batch 1 --dtype bfloat16 --attention-impl cudnn
