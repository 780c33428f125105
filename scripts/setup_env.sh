# Shared set-up of scripts/run_main_job.sh and scripts/run_tests.sh: source it, then call `ensure_env`.
#
# Creates `.venv` at the repository root if it is missing and installs the project into it with the torch CPU pin
# in ONE pip resolve, so the pin cannot be skipped (an unpinned torch may pull a multi-GB CUDA build). The install
# runs again only when pyproject.toml, the pin or the Python changed (a stamp in .venv holds their hash) or the
# installed torch/diffusion_rl no longer match; a rerun costs well under a second. Package indexes come from the
# machine's own pip settings (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, pip.conf): nothing here names one.
#
# Environment: PYTHON (interpreter that creates the venv, defaults to `python3`; needs >= 3.10),
# DIFFUSION_RL_REINSTALL=1 (install even when the stamp matches).

TORCH_PIN="torch==2.13.0"
# Both commands share one environment: the test extras and DeepSpeed (the slow tests launch ZeRO-2/3).
PROJECT_EXTRAS="dev,deepspeed"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.diffusion_rl-install-stamp"

_install_fingerprint() {
    # What the installed environment depends on: the pin, the extras, the project's metadata and the interpreter.
    "$VENV/bin/python" - "$TORCH_PIN [$PROJECT_EXTRAS]" "$REPO_ROOT/pyproject.toml" <<'PY'
import hashlib
import sys

digest = hashlib.sha256(f"{sys.argv[1]}\n{sys.version}\n".encode())
with open(sys.argv[2], "rb") as f:
    digest.update(f.read())
print(digest.hexdigest())
PY
}

_installed_matches_pin() {
    # Cheap (no torch import): a stamp alone would not notice a torch replaced by hand or an uninstalled project.
    "$VENV/bin/python" - "${TORCH_PIN#torch==}" <<'PY' 2>/dev/null
import importlib.metadata as md
import sys

torch_version = md.version("torch").split("+")[0]
md.version("diffusion_rl")
sys.exit(0 if torch_version == sys.argv[1] else 1)
PY
}

ensure_env() {
    local python="${PYTHON:-python3}"
    if [ ! -x "$VENV/bin/python" ]; then
        if ! command -v "$python" >/dev/null 2>&1; then
            echo "error: '$python' not found. Install Python >= 3.10 or set PYTHON=/path/to/python3." >&2
            return 1
        fi
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
            echo "error: $("$python" --version 2>&1) is too old: diffusion_rl needs Python >= 3.10." \
                "Set PYTHON=/path/to/python3.10-or-newer." >&2
            return 1
        fi
        echo "setup: creating $VENV with $("$python" --version 2>&1)" >&2
        # No venv module (Debian/Ubuntu without python3-venv) fails here with Python's own hint.
        "$python" -m venv "$VENV" || return 1
    fi
    local fingerprint
    fingerprint="$(_install_fingerprint)" || return 1
    if [ "${DIFFUSION_RL_REINSTALL:-0}" != "1" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fingerprint" ] \
        && _installed_matches_pin; then
        return 0
    fi
    echo "setup: installing $TORCH_PIN and diffusion_rl[$PROJECT_EXTRAS] into $VENV (first run: a few minutes)" >&2
    rm -f "$STAMP"
    # The venv's bundled pip can predate editable installs of a pyproject-only project (pip >= 21.3).
    "$VENV/bin/python" -m pip install --quiet --upgrade pip || return 1
    # One resolve: the pin and the project together, so pip cannot pick a torch the pin would refuse.
    "$VENV/bin/python" -m pip install --quiet "$TORCH_PIN" -e "$REPO_ROOT[$PROJECT_EXTRAS]" || return 1
    # Written only after a complete install: an interrupted one installs again next time.
    echo "$fingerprint" >"$STAMP"
}
