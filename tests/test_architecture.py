"""The generic diffusion-RL core imports nothing from the gender-bias application (`diffusion_rl.bias`).

A user bringing their own task must never load gender-specific code: checked statically on every core module (with
`ast`, absolute and relative imports, lazy function-level ones included) and at run time (importing the core leaves
no `diffusion_rl.bias*` module in `sys.modules`). The one allowed reference is the top-level package's lazy
re-export of the application's public names (strings in `_LAZY`, imports only under `if TYPE_CHECKING:`).
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import diffusion_rl

PACKAGE_DIR = Path(diffusion_rl.__file__).resolve().parent
BIAS_DIR = PACKAGE_DIR / "bias"
CORE_MODULES = sorted(p for p in PACKAGE_DIR.rglob("*.py") if BIAS_DIR not in p.parents)


def _module_name(path: Path) -> tuple[str, str]:
    """`(module, package)` dotted names of a source file (a package's `__init__` is its own package)."""
    parts = ["diffusion_rl", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imported_modules(source: str, module: str, package: str) -> list[tuple[int, str]]:
    """Every module an import statement of `source` names, resolved to an absolute dotted name, with its line."""
    tree = ast.parse(source)
    skipped: set[int] = set()
    if module == "diffusion_rl":  # the lazy re-exports, for type checkers only
        for node in ast.walk(tree):
            if _is_type_checking_block(node):
                skipped.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from diffusion_rl import bias` / `from . import bias` name the subpackage as an imported member
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def _is_bias(name: str) -> bool:
    return name == "diffusion_rl.bias" or name.startswith("diffusion_rl.bias.")


def test_core_modules_are_found():
    names = {_module_name(p)[0] for p in CORE_MODULES}
    assert {"diffusion_rl.trainer", "diffusion_rl.sft", "diffusion_rl.sampling.sampler", "diffusion_rl.data"} <= names
    assert not any(_is_bias(n) for n in names)


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_core_module_imports_nothing_from_bias(path):
    imports = _imported_modules(path.read_text(), *_module_name(path))
    offending = [f"line {line}: {name}" for line, name in imports if _is_bias(name)]
    assert not offending, f"{path.relative_to(PACKAGE_DIR)} imports the bias application: {offending}"


def test_import_resolution_catches_relative_and_absolute_forms():
    # The checker itself must see every spelling, or the test above could not fail.
    source = (
        "from ..bias import rewards\n"
        "from ..bias.rewards.genbit import GenBitReward\n"
        "import diffusion_rl.bias.data\n"
        "from diffusion_rl import bias\n"
        "from .. import bias as application\n"
        "def f():\n    from ..bias.cli import main\n"
        "from ..data.chat import tokenize_prompts\n"
    )
    names = [n for _, n in _imported_modules(source, "diffusion_rl.evaluation.probe", "diffusion_rl.evaluation")]
    assert [n for n in names if _is_bias(n)] == [
        "diffusion_rl.bias",
        "diffusion_rl.bias.rewards",
        "diffusion_rl.bias.rewards.genbit",
        "diffusion_rl.bias.rewards.genbit.GenBitReward",
        "diffusion_rl.bias.data",
        "diffusion_rl.bias",
        "diffusion_rl.bias",
        "diffusion_rl.bias.cli",
        "diffusion_rl.bias.cli.main",
    ]
    assert "diffusion_rl.data.chat" in names and not _is_bias("diffusion_rl.biased")


def test_importing_the_core_loads_no_bias_module():
    code = (
        "import sys\n"
        "import diffusion_rl, diffusion_rl.trainer, diffusion_rl.sft, diffusion_rl.sampling\n"
        "import diffusion_rl.data, diffusion_rl.rewards, diffusion_rl.evaluation, diffusion_rl.models.tiny\n"
        "print(sorted(m for m in sys.modules if m == 'diffusion_rl.bias' or m.startswith('diffusion_rl.bias.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("package", ["diffusion_rl", "diffusion_rl.bias"])
def test_public_names_resolve(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    assert set(module.__all__) <= set(dir(module))
