"""A missing optional extra never costs a finished run (issue 15.10): without matplotlib the report is written
without figures and says how to get them; the main job warns before training.

matplotlib is made unimportable the way a `pip install .` without the `plots` extra leaves it (`sys.modules` entry
`None` makes `import matplotlib` raise `ImportError`); everything else is the real pipeline on the tiny model.
"""

from __future__ import annotations

import copy
import sys

import pytest
from peft import LoraConfig, get_peft_model

from diffusion_rl.bias.evaluation import evaluate_model, report_evaluation
from diffusion_rl.evaluation.plots import PLOTS_HINT, plots_available

SAMPLER = {"steps": 2, "gen_length": 8, "block_length": 8}


@pytest.fixture(scope="module")
def result(tiny_model, tiny_tokenizer):
    model = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=2, target_modules=["q_proj"])).eval()
    rows = [{"prompt": "Who is the nurse?"}, {"prompt": "Describe the engineer."}]
    return evaluate_model(model, tiny_tokenizer, rows, temperatures=(0.0,), sampler_kwargs=SAMPLER, batch_size=2)


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_report_without_matplotlib_is_written_and_says_how_to_get_plots(result, tmp_path, no_matplotlib):
    assert not plots_available()
    path = report_evaluation(result, tmp_path / "eval", log_history=[{"step": 1, "loss": 0.5}])
    text = path.read_text()
    assert path.name == "report.md" and "## Notes" in text
    assert f"Plots were skipped: matplotlib is not installed. Install it ({PLOTS_HINT})" in text
    assert not list((tmp_path / "eval").glob("plots/*.png"))
    assert (tmp_path / "eval" / "records.jsonl").is_file()


def test_report_with_matplotlib_has_its_plots(result, tmp_path):
    pytest.importorskip("matplotlib")
    assert plots_available()
    path = report_evaluation(result, tmp_path / "eval")
    assert "Plots were skipped" not in path.read_text()
    assert list((tmp_path / "eval").glob("plots/*.png"))


def test_the_main_job_warns_before_training(tmp_path, no_matplotlib, monkeypatch, capsys):
    from diffusion_rl.bias import train as train_bias

    def no_model(*args, **kwargs):  # stop right after the checks that run before any model is built
        raise RuntimeError("stop: the model would be built now")

    monkeypatch.setattr(train_bias, "load_model_and_tokenizer", no_model)
    with pytest.warns(UserWarning, match=r"matplotlib is not installed: the report will have no plots"):
        with pytest.raises(RuntimeError, match="stop"):
            train_bias.main(["--output_dir", str(tmp_path / "out")])
