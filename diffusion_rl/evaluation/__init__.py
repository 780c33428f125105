"""Evaluation: generate before/after on held-out prompts, score, compare with paired bootstrap CIs, plot, report.

Typical use::

    from diffusion_rl.evaluation import evaluate_model, load_adapter, report_evaluation

    model = load_adapter(load_llada("GSAI-ML/LLaDA-8B-Instruct"), "outputs/run/checkpoint-500")
    result = evaluate_model(model, tokenizer, generate_mcq_dataset(256, split="test", question_type=None),
                            temperatures=(0.0, 0.7, 1.0), sampler_kwargs={"steps": 64, "gen_length": 64,
                            "block_length": 32})
    report_evaluation(result, "outputs/eval", log_history="outputs/run")
"""

from .bbq import bbq_scores, has_choice_metadata
from .bootstrap import BootstrapCI, compare, paired_bootstrap
from .generate import AdapterMismatchError, EvalResult, completion_kl, evaluate_model, load_adapter
from .metrics import record_metrics, summarize
from .plots import Plot, load_log_history, plot_bias_distribution, plot_grid, plot_training_curves
from .report import markdown_table, report_evaluation, select_examples, write_report

__all__ = [
    "AdapterMismatchError",
    "BootstrapCI",
    "EvalResult",
    "Plot",
    "bbq_scores",
    "compare",
    "completion_kl",
    "evaluate_model",
    "has_choice_metadata",
    "load_adapter",
    "load_log_history",
    "markdown_table",
    "paired_bootstrap",
    "plot_bias_distribution",
    "plot_grid",
    "plot_training_curves",
    "record_metrics",
    "report_evaluation",
    "select_examples",
    "summarize",
    "write_report",
]
