"""The README's two commands (main job, tests) stay runnable, and CI runs the README's test command verbatim.

README.md marks each command with an HTML comment (``<!-- readme-command: main-job -->`` / ``tests``) right above a
one-line ```bash fence. Renaming a script, editing the README line or `.ci/run` alone makes a test here fail.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
SETUP = ROOT / "scripts" / "setup_env.sh"
MARKER = re.compile(r"^<!-- readme-command: (?P<name>[\w-]+) -->\n```bash\n(?P<body>.*?)\n```", re.M | re.S)


def readme_commands() -> dict[str, str]:
    """The marked commands of README.md, by name, each the single line of its fence."""
    commands = {}
    for match in MARKER.finditer(README.read_text(encoding="utf-8")):
        lines = match["body"].splitlines()
        assert len(lines) == 1, f"README command {match['name']!r} must be one line to copy, got {lines}"
        assert match["name"] not in commands, f"README marks {match['name']!r} twice"
        commands[match["name"]] = lines[0].strip()
    return commands


def script_of(command: str) -> Path:
    """The script a command runs: `bash scripts/x.sh [args]` or `scripts/x.sh [args]`."""
    words = shlex.split(command)
    if words[0] == "bash":
        words = words[1:]
    return ROOT / words[0]


def test_readme_marks_both_commands_at_the_top():
    commands = readme_commands()
    assert set(commands) == {"main-job", "tests"}, commands
    text = README.read_text(encoding="utf-8")
    first_sections = [m.start() for m in re.finditer(r"^## ", text, re.M)][:2]
    assert len(first_sections) == 2, "README needs a section for the two commands and the longer explanation after"
    for name in commands:
        position = text.index(f"<!-- readme-command: {name} -->")
        assert first_sections[0] < position < first_sections[1], f"{name!r} command is not in README's first section"


def test_ci_runs_the_readme_test_command_verbatim():
    command = readme_commands()["tests"]
    lines = [line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()]
    assert command in lines, f".ci/run must run the README's test command verbatim: {command!r}"
    slow = next(i for i, line in enumerate(lines) if line.startswith("python -m pytest") and "-m slow" in line)
    assert lines.index(command) < slow, ".ci/run runs the fast suite (the README command) before the slow tests"


@pytest.mark.parametrize("name", ["main-job", "tests"])
def test_readme_command_scripts_exist_are_executable_and_parse(name):
    script = script_of(readme_commands()[name])
    assert script.is_file(), f"README's {name} command runs {script}, which does not exist"
    assert os.access(script, os.X_OK), f"{script} is not executable (git update-index --chmod=+x)"
    for path in (script, SETUP):
        out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, f"bash -n {path}: {out.stderr}"
    text = script.read_text(encoding="utf-8")
    assert "scripts/setup_env.sh" in text or "/setup_env.sh" in text, f"{script} must share the set-up"
    assert '"$@"' in text, f"{script} must pass extra arguments through"


def test_main_job_script_launches_the_job_with_the_packaged_accelerate_config():
    text = script_of(readme_commands()["main-job"]).read_text(encoding="utf-8")
    config = re.search(r"--config_file (\S+)", text)
    assert config and (ROOT / config[1]).is_file(), "the main job is launched with a packaged accelerate config"
    assert "examples/train_llada_bias.py" in text and (ROOT / "examples" / "train_llada_bias.py").is_file()


def _bash_setup(snippet: str, repo_root: Path | None = None) -> subprocess.CompletedProcess:
    """Run `snippet` after sourcing scripts/setup_env.sh (VENV is this checkout's .venv; REPO_ROOT may move)."""
    override = f"REPO_ROOT={shlex.quote(str(repo_root))}; " if repo_root else ""
    script = f". {shlex.quote(str(SETUP))} && {override}{snippet}"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


needs_repo_venv = pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="runs the set-up's checks with ROOT/.venv"
)


@needs_repo_venv
def test_installed_torch_matches_the_setup_pin():
    out = _bash_setup("_installed_matches_pin && echo matches")
    assert out.stdout.strip() == "matches", f"torch {__import__('torch').__version__} is not the set-up's pin"


@needs_repo_venv
def test_install_fingerprint_changes_with_pyproject_and_only_with_it(tmp_path):
    """A rerun skips the install only while the stamp matches: same pyproject, same hash; any edit, another one."""
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    same = _bash_setup("_install_fingerprint", tmp_path)
    real = _bash_setup("_install_fingerprint")
    assert same.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}", same.stdout.strip()), same.stderr
    assert same.stdout == real.stdout
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + "\n# edited\n")
    assert _bash_setup("_install_fingerprint", tmp_path).stdout != real.stdout
