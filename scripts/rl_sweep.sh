#!/usr/bin/env bash
# Hyper-parameter sweep of `bgpo train` on a machine with many cores and one GPU: each line of
# the job list below is one run (name, then key=value overrides of the default config), all run
# in parallel; JOBSFILE=FILE runs the jobs listed in FILE instead (e.g. scripts/sweep-jobs-2.txt).
# EXTRA="key=value ..." is added to every RL run (e.g. task.eval_size=1024); LR2 is the second
# learning rate of sft_then_rl (default 1e-4).
# Used on a one-GPU machine to choose the RL settings of the CPU default.
# Results: $OUT/sweep.json (held-out accuracy curve and steps of every run), $OUT/logs.txt.
set -uo pipefail
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
OUT=${OUT:-runs/sweep}; W=/tmp/sweep; mkdir -p "$OUT" "$W"
DEV=${DEV:-cuda}; STEPS=${STEPS:-300}
BUDGET=${BUDGET:-480}; DEADLINE=$(( $(date +%s) + BUDGET ))  # every run's training ends by then
COMMON="model.device=$DEV train.steps=$STEPS train.eval_every=50 train.log_generations=0 ${EXTRA:-}"
run() {  # name, overrides...
  local name=$1; shift
  local minutes; minutes=$(python -c "print(max(0.2, ($DEADLINE - $(date +%s) - 45) / 60))")
  python -m bgpo.cli train $COMMON train.max_minutes=$minutes train.output_dir=$W/$name "$@" > $W/$name.log 2>&1
}
sft_then_rl() {  # name, sft overrides ; rl runs at two learning rates
  local name=$1; shift
  python -m bgpo.cli sft configs/sft-countdown-tiny.yaml model.device=$DEV train.output_dir=$W/$name "$@" \
    > $W/$name.log 2>&1
  mkdir -p "$OUT/ckpt/$name" && cp $W/$name/checkpoint/* "$OUT/ckpt/$name/"
  run $name-lr5e-5 model.path=$W/$name/checkpoint &
  run $name-lr${LR2:-1e-4} model.path=$W/$name/checkpoint train.lr=${LR2:-1e-4} &
  wait
}
export -f run sft_then_rl; export COMMON W DEV DEADLINE OUT
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
cat > $W/jobs <<'J'
run base
run seed1 train.seed=1
run lr2e-5 train.lr=2e-5
run lr1e-4 train.lr=1e-4
run lr2e-4 train.lr=2e-4
run T0.7 rollout.temperature=0.7
run T1.3 rollout.temperature=1.3
run P8G16 train.prompts_per_step=8 train.num_generations=16
run P8G16-lr1e-4 train.prompts_per_step=8 train.num_generations=16 train.lr=1e-4
run nt4 algo.n_t=4
run noscale algo.scale_advantages=false
run train3164 task.train_size=3164
run mu2 train.mu=2 algo.clip_eps=0.2
sft_then_rl sft2000 train.steps=2000
sft_then_rl rope1e4-6000 model.rope_theta=10000 train.steps=6000 eval.stop_at_accuracy_max=1.0
J
start=$(date +%s)
xargs -P 16 -I{} bash -c '{}' < ${JOBSFILE:-$W/jobs}
echo "sweep took $(( $(date +%s) - start )) s"
python - "$W" "$OUT" <<'PY'
import json, pathlib, sys
w, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
res = {}
for d in sorted(p for p in w.iterdir() if p.is_dir()):
    ev = d / "eval.jsonl"
    if not ev.exists():
        continue
    curve = [(r["step"], r["accuracy"]) for r in map(json.loads, ev.read_text().splitlines())]
    summ = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    res[d.name] = {"curve": curve, "summary": summ}
    print(f"{d.name:28s} " + " ".join(f"{s}:{a:.3f}" for s, a in curve))
(out / "sweep.json").write_text(json.dumps(res, indent=1))
PY
for f in $W/*.log; do echo "== $f"; tail -n 3 $f; done > $OUT/logs.txt
