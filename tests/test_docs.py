"""Every ```python block of the docs (and README.md) runs, and the site builds with ``mkdocs build --strict``.

Conventions the runner enforces (documented in docs/index.md, "About the code on these pages"):

* the blocks of one Markdown file run in order in one shared namespace, like notebook cells, so a page can build the
  tiny model once and reuse it; every file starts from a fresh namespace;
* they run in a temporary working directory (anything they write is thrown away) in which ``examples/`` links to
  the repository's, with ``HF_HUB_OFFLINE=1``;
* a block is skipped only when the line before its opening fence is ``<!-- skip-snippet -->``; keep those few (the
  limit is :data:`MAX_SKIPPED`), and use ```bash for shell commands, which never run.
"""

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SKIP_MARKER = "<!-- skip-snippet -->"
MAX_SKIPPED = 4
# Top-level fences (CommonMark: closed by a fence at least as long as the opening one); only a language tag of
# exactly python/py runs (```pycon, ```bash ... never do).
_OPEN = re.compile(r"^(`{3,})\s*([\w-]*)")
_PYTHON = ("python", "py")


@dataclass
class Snippet:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    skipped: bool


def extract_snippets(path: Path) -> list[Snippet]:
    """The ```python blocks of a Markdown file, with their line numbers and skip markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    i = 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        start, ticks = i, opening.group(1)
        is_python = opening.group(2) in _PYTHON
        closing = re.compile(rf"^{ticks}`*\s*$")
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}:{start + 1}: code fence is never closed.")
        if is_python:
            previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            code = "\n".join(lines[start + 1 : i]) + "\n"
            snippets.append(Snippet(path, start + 1, code, previous == SKIP_MARKER))
        i += 1  # past the closing fence
    return snippets


def doc_files() -> list[Path]:
    files = sorted(DOCS.rglob("*.md"))
    readme = REPO / "README.md"
    return files + ([readme] if readme.is_file() else [])


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


# ------------------------------------------------------------------ the extractor itself


def test_extract_snippets_finds_python_blocks_and_skip_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n```python\nx = 1\n```\n\n```bash\npip install foo\n```\n\n"
        f"{SKIP_MARKER}\n\n```python\nraise RuntimeError\n```\n\n````markdown\n```python\nnot code\n```\n````\n"
        "```py\ny = x + 1\n```\n",
        encoding="utf-8",
    )
    snippets = extract_snippets(page)
    # The python block shown inside the 4-backtick markdown example is text, not a snippet.
    assert [(s.line, s.code, s.skipped) for s in snippets] == [
        (3, "x = 1\n", False),
        (13, "raise RuntimeError\n", True),
        (22, "y = x + 1\n", False),
    ]


def test_unclosed_fence_is_reported(tmp_path):
    page = tmp_path / "bad.md"
    page.write_text("text\n```python\nx = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.md:2: code fence is never closed"):
        extract_snippets(page)


def test_skipped_snippets_are_few():
    skipped = [f"{_id(s.path)}:{s.line}" for p in doc_files() for s in extract_snippets(p) if s.skipped]
    assert len(skipped) <= MAX_SKIPPED, f"too many skipped snippets (use ```bash for commands): {skipped}"


def test_every_skip_marker_precedes_a_python_block():
    for path in doc_files():
        markers = path.read_text(encoding="utf-8").count(SKIP_MARKER)
        assert markers == sum(s.skipped for s in extract_snippets(path)), f"{_id(path)} has a dangling skip marker"


# ------------------------------------------------------------------ running the snippets


@pytest.mark.parametrize("path", [p for p in doc_files() if extract_snippets(p)], ids=_id)
def test_doc_snippets_run(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    namespace = {"__name__": "__docs__"}
    for snippet in extract_snippets(path):
        if snippet.skipped:
            continue
        where = f"{_id(path)}:{snippet.line}"
        try:
            exec(compile(snippet.code, where, "exec"), namespace)
        except Exception as err:  # re-raised with the snippet's location, the traceback names the line in it
            raise AssertionError(f"the snippet at {where} failed: {type(err).__name__}: {err}") from err


# ------------------------------------------------------------------ the site


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="mkdocs-material / mkdocstrings-python not installed (pip install -e '.[docs]')",
)
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "api" / "trainer" / "index.html").is_file()
