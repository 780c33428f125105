"""Prompt data: user-data loaders, the record schema and prompt rendering, and chat tokenization.

The gender-bias application's data (the synthetic MCQ generator and BBQ) lives in `diffusion_rl.bias.data`.
"""

from .chat import ControlTokenError, check_plain_text, find_control_tokens, tokenize_prompts
from .loaders import PromptDataError, export_jsonl, load_prompt_dataset, render_record_prompt
from .records import RECORD_FEATURES, render_free_text_prompt, render_mcq_prompt

__all__ = [
    "RECORD_FEATURES",
    "ControlTokenError",
    "PromptDataError",
    "check_plain_text",
    "export_jsonl",
    "find_control_tokens",
    "load_prompt_dataset",
    "render_free_text_prompt",
    "render_mcq_prompt",
    "render_record_prompt",
    "tokenize_prompts",
]
