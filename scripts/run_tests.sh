#!/usr/bin/env bash
# The test suite on a fresh machine or an existing checkout: sets up .venv if needed (scripts/setup_env.sh), then
# runs the fast tests (`pytest -q`; the slow ones are deselected by pyproject.toml). Extra arguments go to pytest:
#   bash scripts/run_tests.sh tests/test_sampler.py -k cache
#   bash scripts/run_tests.sh -m slow
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
ensure_env
cd "$REPO_ROOT"
export HF_HUB_OFFLINE=1  # the suite is offline by design: a test that reaches the Hub should fail, not hang
# The tiny models' ops are too small for several threads: on a loaded 2-core machine tests/test_sampler.py +
# tests/test_logprobs.py took 32-71 s with torch's default threads and 8-10 s with one. A value set by the caller wins.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$VENV/bin/python" -m pytest -q "$@"
