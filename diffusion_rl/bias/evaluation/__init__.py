"""Evaluation of the gender-bias application: before/after generation scored with the bias metrics, BBQ, the report.

Typical use::

    from diffusion_rl.bias.data import generate_mcq_dataset
    from diffusion_rl.bias.evaluation import evaluate_model, report_evaluation
    from diffusion_rl.evaluation import load_adapter

    model = load_adapter(load_llada("GSAI-ML/LLaDA-8B-Instruct"), "outputs/run/checkpoint-500")
    result = evaluate_model(model, tokenizer, generate_mcq_dataset(256, split="test", question_type=None),
                            temperatures=(0.0, 0.7, 1.0), sampler_kwargs={"steps": 64, "gen_length": 64,
                            "block_length": 32})
    report_evaluation(result, "outputs/eval", log_history="outputs/run")
"""

from .bbq import bbq_scores, has_choice_metadata
from .evaluate import evaluate_model
from .metrics import record_metrics, summarize
from .report import markdown_table, report_evaluation, select_examples, write_report

__all__ = [
    "bbq_scores",
    "evaluate_model",
    "has_choice_metadata",
    "markdown_table",
    "record_metrics",
    "report_evaluation",
    "select_examples",
    "summarize",
    "write_report",
]
