#!/usr/bin/env bash
# GPU checks, run on a CUDA machine from the repository root: the marked CUDA tests, the memory
# benchmark at a larger size in bfloat16, and a 3-step training run on CUDA.
set -uo pipefail
export PYTHONPATH=$PWD OMP_NUM_THREADS=4
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -4
python -m bgpo.cli bench memory --algo bgpo,vrpo --nt 1,2,4,8,16,32 --d-model 2048 --heads 16 --layers 16 \
  --mlp 5632 --vocab 32000 --prompt-length 64 --response-length 512 --dtype bfloat16 --device cuda \
  --out-dir "$OUT/memory" 2>&1 | tail -12
python - <<'PY'
from bgpo.models import LLaDAConfig, LLaDAModelLM, char_tokenizer
tok = char_tokenizer()
LLaDAModelLM(LLaDAConfig(vocab_size=len(tok), d_model=128, n_heads=4, n_layers=4, mlp_hidden_size=384)).save_pretrained("/tmp/gpu-tiny")
tok.save_pretrained("/tmp/gpu-tiny")
PY
python -m bgpo.cli train model.path=/tmp/gpu-tiny model.device=cuda train.steps=3 task.eval_size=32 \
  train.output_dir="$OUT/train" task.reward=tests/rewards_for_tests.py:digit_fraction 2>&1 | tail -6
