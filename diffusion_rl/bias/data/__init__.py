"""Data of the gender-bias application: the synthetic MCQ generator and BBQ (generic loaders: `diffusion_rl.data`).

See docs/datasheet.md for the families, label semantics, counts and licenses.
"""

from .bbq import BBQ_FEATURES, NUM_BBQ_GENDER_ITEMS, convert_bbq_item, load_bbq_gender
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

__all__ = [
    "BBQ_FEATURES",
    "DEFAULT_POOL_SIZES",
    "FAMILIES",
    "GENERATOR_VERSION",
    "NUM_BBQ_GENDER_ITEMS",
    "QUESTION_TYPES",
    "SEED_SUBSET_SIZES",
    "convert_bbq_item",
    "generate_mcq_dataset",
    "iter_mcq_records",
    "load_bbq_gender",
    "load_synthetic_subset",
    "records_to_dataset",
    "render_answer",
]
