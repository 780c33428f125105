#!/usr/bin/env bash
# The main job on a fresh machine or an existing checkout: sets up .venv if needed (scripts/setup_env.sh), then
# trains the LoRA adapter on the embedded default model and prints the before/after table
# (outputs/tiny-debias/report.{json,md}). Extra arguments go to the job:
#   bash scripts/run_main_job.sh --help
#   bash scripts/run_main_job.sh --max_steps 2 --output_dir outputs/quick
# The packaged one-process accelerate config says every launcher setting, so `accelerate launch` prints no
# "values were not passed ... defaults used instead" warning (and no `accelerate config` is needed first).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
ensure_env
cd "$REPO_ROOT"
exec "$VENV/bin/accelerate" launch --config_file examples/accelerate_configs/default.yaml \
    examples/train_llada_bias.py "$@"
