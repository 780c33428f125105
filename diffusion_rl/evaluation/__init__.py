"""Evaluation: generate before/after on held-out prompts, compare with paired bootstrap CIs, plot.

The generic pieces live here; the gender-bias metrics, BBQ scores and the markdown report are in
`diffusion_rl.bias.evaluation`. Typical use::

    from diffusion_rl.evaluation import generate_completions, load_adapter

    model = load_adapter(load_llada("GSAI-ML/LLaDA-8B-Instruct"), "outputs/run/checkpoint-500")
    result = generate_completions(model, tokenizer, prompts, temperatures=(0.0, 0.7),
                                  sampler_kwargs={"steps": 64, "gen_length": 64, "block_length": 32})
"""

from .bootstrap import BootstrapCI, compare, paired_bootstrap
from .generate import AdapterMismatchError, EvalResult, completion_kl, generate_completions, load_adapter
from .plots import (
    MetricLabel,
    Plot,
    load_log_history,
    plot_before_after,
    plot_bias_distribution,
    plot_grid,
    plot_training_curves,
)
from .sequence_kl import SequenceKL, sequence_kl

__all__ = [
    "AdapterMismatchError",
    "BootstrapCI",
    "EvalResult",
    "MetricLabel",
    "Plot",
    "SequenceKL",
    "compare",
    "completion_kl",
    "generate_completions",
    "load_adapter",
    "load_log_history",
    "paired_bootstrap",
    "plot_before_after",
    "plot_bias_distribution",
    "plot_grid",
    "plot_training_curves",
    "sequence_kl",
]
