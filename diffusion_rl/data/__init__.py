"""Data for bias fine-tuning: the synthetic MCQ generator, user-data loaders, BBQ, and chat tokenization.

See docs/datasheet.md for the families, label semantics, counts and licenses.
"""

from .bbq import BBQ_FEATURES, NUM_BBQ_GENDER_ITEMS, convert_bbq_item, load_bbq_gender
from .chat import tokenize_prompts
from .loaders import PromptDataError, export_jsonl, load_prompt_dataset, render_record_prompt
from .mcq import (
    DEFAULT_POOL_SIZES,
    FAMILIES,
    GENERATOR_VERSION,
    QUESTION_TYPES,
    SEED_SUBSET_SIZES,
    generate_mcq_dataset,
    iter_mcq_records,
    load_synthetic_subset,
    records_to_dataset,
    render_answer,
)
from .templates import RECORD_FEATURES, render_free_text_prompt, render_mcq_prompt

__all__ = [
    "BBQ_FEATURES",
    "DEFAULT_POOL_SIZES",
    "FAMILIES",
    "GENERATOR_VERSION",
    "NUM_BBQ_GENDER_ITEMS",
    "QUESTION_TYPES",
    "RECORD_FEATURES",
    "SEED_SUBSET_SIZES",
    "PromptDataError",
    "convert_bbq_item",
    "export_jsonl",
    "generate_mcq_dataset",
    "iter_mcq_records",
    "load_bbq_gender",
    "load_prompt_dataset",
    "load_synthetic_subset",
    "records_to_dataset",
    "render_answer",
    "render_free_text_prompt",
    "render_mcq_prompt",
    "render_record_prompt",
    "tokenize_prompts",
]
