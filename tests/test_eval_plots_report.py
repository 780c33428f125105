"""Plots are valid PNGs with the expected panels; the report renders tables, plots, examples and limitations."""

import json

import numpy as np
import pandas as pd
import pytest

from diffusion_rl.bias.evaluation.report import LIMITATIONS, markdown_table, select_examples, write_report
from diffusion_rl.evaluation.plots import (
    Plot,
    load_log_history,
    plot_bias_distribution,
    plot_grid,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

LOG_HISTORY = [
    {"step": 1, "loss": 0.5, "reward": -0.3, "kl": 0.0, "bias/genbit": 0.4},
    {"step": 2, "loss": 0.4, "reward": -0.2, "kl": 0.01, "bias/genbit": 0.3},
    {"step": 3, "loss": 0.3, "reward": -0.1, "kl": 0.02, "bias/genbit": 0.2},
    {"step": 3, "train_runtime": 1.0},  # the final summary entry the Trainer appends
]


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    # IHDR chunk: width and height as big-endian uint32 right after the 8-byte magic and 8 bytes of chunk header
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _records():
    # Two prompts per question type, both arms, two temperatures; the adapter drops pronouns on prompt 1.
    rows = []
    for t in (0.0, 1.0):
        for variant, counts in (("base", [2, 3, 0, 1]), ("adapter", [2, 0, 0, 1])):
            for i, (qtype, count) in enumerate(zip(["multiple_choice"] * 2 + ["free_text"] * 2, counts)):
                rows.append(
                    {
                        "index": i,
                        "question_type": qtype,
                        "temperature": t,
                        "variant": variant,
                        "prompt": f"Question {i}?\nA) he\nB) they",
                        "completion": f"{variant} answer {i} | with pipe",
                        "gendered_pronoun_count": count,
                        "genbit_bias": 0.1 * count,
                    }
                )
    return pd.DataFrame(rows)


def test_training_curves_from_trainer_state(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoint-10").mkdir()
    (run / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"log_history": LOG_HISTORY[:1]}))
    (run / "checkpoint-10" / "trainer_state.json").write_text(json.dumps({"log_history": LOG_HISTORY}))
    # The latest checkpoint (by step number, not by name) is used when the run dir has no trainer_state.json.
    assert load_log_history(run) == LOG_HISTORY
    plot = plot_training_curves(run, tmp_path / "figs" / "training.png")
    assert plot.panels == ["loss", "reward", "KL(adapter || base)", "GenBit bias"]
    width, height = _png_size(plot.path)
    assert width == 1200 and height == 600  # 3 columns x 2 rows of 4x3-inch panels at 100 dpi


def test_training_curves_bad_input(tmp_path):
    with pytest.raises(ValueError, match="none of"):
        plot_training_curves([{"step": 1, "train_runtime": 2.0}], tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="trainer_state.json"):
        load_log_history(tmp_path / "missing")


def test_bias_distribution_and_grid(tmp_path):
    records = _records()
    plot = plot_bias_distribution(records, tmp_path / "bias.png", temperature=0.0)
    assert plot.panels == ["genbit_bias", "gendered_pronoun_count"]
    assert _png_size(plot.path) == (800, 300)
    with pytest.raises(ValueError, match="no column"):
        plot_bias_distribution(records, tmp_path / "b.png", metrics=["nope"])
    with pytest.raises(ValueError, match="variant 'adapter'"):
        plot_bias_distribution(records[records["variant"] == "base"], tmp_path / "b.png")

    grid = pd.DataFrame(
        [{"dataset_size": n, "temperature": t, "rate": 1 / n, "kl": n * t} for n in (1000, 2000) for t in (0.0, 1.0)]
    )
    plot = plot_grid(grid, tmp_path / "grid.png", metrics=["rate", "kl"])
    assert plot.panels == ["rate", "kl"] and _png_size(plot.path) == (800, 300)
    with pytest.raises(ValueError, match="missing"):
        plot_grid(grid, tmp_path / "g.png", metrics=["absent"])


def test_markdown_table_escapes_and_formats():
    table = markdown_table(pd.DataFrame({"a": [1.23456, np.nan], "b": ["x|y", "z\nw"]}))
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1.235 | x\\|y |", "| – | z w |"]


def test_select_examples_rule():
    ex = select_examples(_records(), k=1)
    # Per question type (sorted: free_text, multiple_choice): the first prompt, then the largest |change| among the
    # others. multiple_choice: prompt 0 first, then prompt 1 (change 3 -> 0 = -3). free_text: 2 first, then 3 (0).
    assert list(ex["index"]) == [2, 3, 0, 1]
    assert list(ex["change in gendered_pronoun_count"]) == [0, 0, 0, -3]
    assert (ex["temperature"] == 0.0).all()
    assert ex.iloc[3]["before"].startswith("base") and ex.iloc[3]["after"].startswith("adapter")


def test_write_report(tmp_path):
    records = _records()
    plot = plot_bias_distribution(records, tmp_path / "bias.png")
    metrics = pd.DataFrame({"temperature": [0.0], "variant": ["adapter"], "gendered_pronoun_rate": [0.1]})
    path = write_report(
        tmp_path,
        metrics=metrics,
        records=records,
        comparison=pd.DataFrame({"metric": ["genbit_bias"], "diff": [-0.1], "ci_low": [-0.2], "ci_high": [0.0]}),
        bbq=pd.DataFrame({"bias_score_disambiguated": [0.2]}),
        plots=[plot, Plot(path=tmp_path / "elsewhere.png", panels=["p"])],
        notes=["choice metrics skipped for free_text rows"],
        settings={"seed": 0},
        num_examples=1,
    )
    text = path.read_text()
    assert path.name == "report.md"
    for heading in [
        "## Settings",
        "## Metrics per setting",
        "## Differences",
        "## BBQ-style scores",
        "## Plots",
        "## Examples before and after",
        "## Notes",
        "## Limitations",
    ]:
        assert heading in text
    assert "![genbit_bias, gendered_pronoun_count](bias.png)" in text
    assert "- **adapter:** adapter answer 1 \\| with pipe" not in text  # examples are prose, not table cells
    assert "- **adapter:** adapter answer 1 | with pipe" in text
    assert LIMITATIONS in text
    # Without both arms the examples section is left out instead of failing.
    text = write_report(
        tmp_path / "one", metrics=metrics, records=records[records["variant"] == "adapter"]
    ).read_text()
    assert "## Examples" not in text and "## Limitations" in text
