"""Plots are valid PNGs with the expected panels; the report renders tables, plots, examples and limitations."""

import json

import numpy as np
import pandas as pd
import pytest

from diffusion_rl.bias.evaluation.report import BIAS_LABELS, LIMITATIONS, markdown_table, select_examples, write_report
from diffusion_rl.evaluation.plots import (
    MetricLabel,
    Plot,
    load_log_history,
    metric_label,
    moving_average,
    plot_before_after,
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
    plot = plot_training_curves(run, tmp_path / "figs" / "training.png")  # the generic curves by default
    assert plot.panels == ["Training loss", "Mean reward", "KL from the base model, completion masked"]
    assert _png_size(plot.path) == (1350, 330)  # 3 columns x 1 row of 4.5 x 3.3-inch panels at 100 dpi
    keys = ["loss", "reward", "kl", "bias/genbit"]
    plot = plot_training_curves(run, tmp_path / "figs" / "bias.png", keys=keys, labels=BIAS_LABELS)
    assert plot.panels[-1] == "GenBit bias of the completions" and _png_size(plot.path) == (1350, 660)


def test_log_history_from_the_bias_jobs_train_log(tmp_path):
    """The bias job saves no checkpoint by default: its `train_log.jsonl` (one log dict a line) is the history."""
    import pytest

    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in LOG_HISTORY) + "\n")
    assert load_log_history(tmp_path) == LOG_HISTORY
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": LOG_HISTORY[:1]}))
    assert load_log_history(tmp_path) == LOG_HISTORY[:1]  # the trainer's own state wins
    with pytest.raises(FileNotFoundError, match="no trainer_state.json \\(or train_log.jsonl\\)"):
        load_log_history(tmp_path / "empty")


def test_labels_in_words_and_the_moving_average():
    assert metric_label("kl") == MetricLabel(
        "KL from the base model, completion masked", "KL(adapter || base), nats per position"
    )
    assert metric_label("eval_reward").title == "Mean reward (held-out)"
    assert metric_label("genbit_corpus") == MetricLabel("Genbit corpus", "value")  # unknown: its name in words
    # Centred, the window shrinking at the ends: every step keeps a value.
    np.testing.assert_allclose(moving_average([0, 3, 6, 9], 3), [1.5, 3, 6, 7.5])


def test_training_curves_bad_input(tmp_path):
    with pytest.raises(ValueError, match="none of"):
        plot_training_curves([{"step": 1, "train_runtime": 2.0}], tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="trainer_state.json"):
        load_log_history(tmp_path / "missing")


def test_bias_distribution_and_grid(tmp_path):
    records = _records()
    records["empty"] = np.nan
    metrics = ["genbit_bias", "gendered_pronoun_count", "empty"]  # a metric without values gets no empty panel
    plot = plot_bias_distribution(records, tmp_path / "bias.png", temperature=0.0, metrics=metrics, labels=BIAS_LABELS)
    assert plot.panels == ["GenBit bias per completion", "Gendered pronouns per completion"]
    assert _png_size(plot.path) == (900, 330)
    with pytest.raises(ValueError, match="no column"):
        plot_bias_distribution(records, tmp_path / "b.png", metrics=["nope"])
    with pytest.raises(ValueError, match="variant 'adapter'"):
        plot_bias_distribution(records[records["variant"] == "base"], tmp_path / "b.png")

    grid = pd.DataFrame(
        [{"dataset_size": n, "temperature": t, "rate": 1 / n, "kl": n * t} for n in (1000, 2000) for t in (0.0, 1.0)]
    )
    plot = plot_grid(grid, tmp_path / "grid.png", metrics=["rate", "kl"])
    assert plot.panels == ["Rate", "KL from the base model, completion masked"] and _png_size(plot.path) == (900, 330)
    with pytest.raises(ValueError, match="missing"):
        plot_grid(grid, tmp_path / "g.png", metrics=["absent"])


def test_before_after_bars_state_the_paired_change(tmp_path):
    from diffusion_rl.evaluation.bootstrap import paired_bootstrap

    records = _records()
    plot = plot_before_after(records, tmp_path / "ba.png", metrics=["gendered_pronoun_count", "genbit_bias"])
    assert plot.panels == ["Gendered pronoun count", "Genbit bias"]
    assert _png_size(plot.path) == (920, 340)
    base, adapter = (
        records[records["variant"] == v].sort_values(["temperature", "index"]) for v in ("base", "adapter")
    )
    ci = paired_bootstrap(base["gendered_pronoun_count"], adapter["gendered_pronoun_count"])
    assert ci.diff == pytest.approx(-0.75)  # prompt 1 drops 3 pronouns at both temperatures: -6 / 8 pairs
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_before_after(records.assign(x=np.nan), tmp_path / "x.png", metrics=["x"])


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
    assert "![Genbit bias, Gendered pronoun count](bias.png)" in text
    assert "- **adapter:** adapter answer 1 \\| with pipe" not in text  # examples are prose, not table cells
    assert "- **adapter:** adapter answer 1 | with pipe" in text
    assert LIMITATIONS in text
    # Without both arms the examples section is left out instead of failing.
    text = write_report(
        tmp_path / "one", metrics=metrics, records=records[records["variant"] == "adapter"]
    ).read_text()
    assert "## Examples" not in text and "## Limitations" in text


def test_never_negative_bars_start_at_zero_and_a_flat_zero_series_gets_a_visible_axis(tmp_path):
    from matplotlib.figure import Figure

    from diffusion_rl.evaluation.plots import _signed, _start_at_zero

    zero, share, signed = (Figure().add_subplot() for _ in range(3))
    for ax, values in ((zero, [0.0, 0.0]), (share, [0.2, 0.4]), (signed, [-0.1, 0.3])):
        ax.bar([0, 1], values)
    assert zero.get_ylim() == pytest.approx((-0.055, 0.055))  # matplotlib's own margins around a flat series
    _start_at_zero(zero, np.array([0.0, 0.0, np.nan]))
    _start_at_zero(share, np.array([0.2, 0.4]))
    before = signed.get_ylim()
    _start_at_zero(signed, np.array([-0.1, 0.3]))
    assert zero.get_ylim() == (0, 1) and share.get_ylim() == pytest.approx((0, 0.42)) and signed.get_ylim() == before
    assert [_signed(v) for v in (-0.0508, 0.000838, 0.0, -0.6654)] == ["-0.051", "+0.00084", "+0", "-0.665"]
    records = _records()
    plot = plot_before_after(records, tmp_path / "t.png", metrics=["genbit_bias"], title="main split")
    assert plot.panels == ["Genbit bias"] and _png_size(plot.path)[0] > 0
