#!/usr/bin/env bash
# The training jobs on one GPU, as a user runs them (docs/benchmarks.md, "GPU check"): the README's single-GPU
# command on a random model of LLaDA-8B's shape (benchmarks/wide_model.py) for 2 steps, with exact and with
# dual-cache rollouts, then the main job with no arguments. Each job has a time cap; the logs, reports and an
# nvidia-smi memory trace go to OUT (default /tmp/gpu_jobs). Offline: nothing is downloaded.
#
#   bash benchmarks/gpu_jobs.sh                  # on the GPU (python3, accelerate, this repo importable)
#   LOCAL=1 PY=python bash benchmarks/gpu_jobs.sh  # reduced shape on CPU, to try the script
set -u
START=$(date +%s)
DEADLINE=${DEADLINE:-540}  # seconds for the whole script
OUT=${OUT:-/tmp/gpu_jobs}
PY=${PY:-python3}
left() { echo $((DEADLINE - ($(date +%s) - START))); }
cap() { local l; l=$(left); if [ "$l" -lt "$1" ]; then echo "$l"; else echo "$1"; fi; }
stage() { echo "=== $1 at +$(($(date +%s) - START))s, $(left)s left"; }
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -z "${LOCAL:-}" ]; then
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 500 >"$OUT/gpu_mem.csv" &
  MONITOR=$!
  WIDE=()
  CPU=()
  CONFIG=examples/accelerate_configs/single_gpu.yaml
else
  MONITOR=
  WIDE=(--layers 2 --width 128 --mlp 256 --heads 4 --device cpu --dtype float32)
  CPU=(--bf16 false --dtype float32)
  CONFIG=examples/accelerate_configs/default.yaml
fi
LAUNCH=("$PY" -m accelerate.commands.launch)
stage wide_model
timeout "$(cap 100)" "$PY" benchmarks/wide_model.py "$OUT/wide_model" "${WIDE[@]}"
echo "rc $?"
JOB=(examples/train_llada_bias.py --model_name_or_path "$OUT/wide_model" --max_steps 2 --eval_size 16
  --eval_free_text_size 8 --eval_sequence_kl false --eval_unseen_roles_size 0 --eval_temperatures 0
  --save_strategy no "${CPU[@]}")
stage wide_exact
timeout "$(cap 150)" "${LAUNCH[@]}" --config_file "$CONFIG" "${JOB[@]}" --output_dir "$OUT/wide_exact" \
  >"$OUT/wide_exact.log" 2>&1
echo "rc $?"
stage main_job
timeout "$(cap 170)" "${LAUNCH[@]}" --config_file examples/accelerate_configs/default.yaml \
  examples/train_llada_bias.py --output_dir "$OUT/main_job" >"$OUT/main_job.log" 2>&1
echo "rc $?"
stage wide_dual
timeout "$(cap 150)" "${LAUNCH[@]}" --config_file "$CONFIG" "${JOB[@]}" --sampler_cache dual --sampler_threshold 0.9 \
  --output_dir "$OUT/wide_dual" >"$OUT/wide_dual.log" 2>&1
echo "rc $?"
[ -n "$MONITOR" ] && kill "$MONITOR"
rm -rf "$OUT/wide_model"  # 14 GB of random weights
stage done
