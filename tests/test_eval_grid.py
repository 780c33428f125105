"""examples/paper_grid.py end to end on the tiny model (two tiny dataset sizes): grid table, plots and reports."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

GRID_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "paper_grid.py"


@pytest.mark.slow
def test_paper_grid_quick(tiny_model_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("paper_grid", GRID_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--quick", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path)])
    grid = pd.read_csv(tmp_path / "grid.csv")
    # Base (size 0) once, then one adapter per size; 2 temperatures x 2 question types each.
    assert sorted(set(grid["dataset_size"])) == [0, 8, 16]
    assert len(grid) == 3 * 2 * 2
    assert set(grid[grid["dataset_size"] == 0]["variant"]) == {"base"}
    for qtype in ("multiple_choice", "free_text"):
        assert (tmp_path / f"grid_{qtype}.png").read_bytes()[:4] == b"\x89PNG"
    for size in (8, 16):
        size_dir = tmp_path / f"size-{size}"
        assert (size_dir / "adapter" / "adapter_config.json").is_file()
        assert (size_dir / "plots" / "training.png").is_file()
        assert "## Examples before and after" in (size_dir / "report.md").read_text()
    assert report == tmp_path / "report.md" and "size-8/report.md" in report.read_text()
