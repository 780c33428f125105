"""The record schema of prompt datasets and the rendering of a question into a chat-ready user message.

Shared by the user-data loaders (`loaders.py`) and by applications that generate their own records (the bias
application's synthetic MCQ generator and BBQ import render through the same functions, so a user's edsl-style
record and a generated one give the same prompt).
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Arrow schema shared by the synthetic generator, the loaders (when the columns are present) and BBQ. Missing
# indices are nulls (Arrow int32 columns are nullable), never -1; free-text records have empty option lists.
RECORD_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "scenario_id": datasets.Value("string"),
        "question_name": datasets.Value("string"),
        "question_text": datasets.Value("string"),
        "question_options": datasets.List(datasets.Value("string")),
        "question_type": datasets.Value("string"),
        "option_genders": datasets.List(datasets.Value("string")),
        "neutral_option_indices": datasets.List(datasets.Value("int32")),
        "stereotyped_option_index": datasets.Value("int32"),
        "anti_stereotyped_option_index": datasets.Value("int32"),
        "gold_option_index": datasets.Value("int32"),
        "context_condition": datasets.Value("string"),
        "template_family": datasets.Value("string"),
        "template_id": datasets.Value("string"),
        "occupation": datasets.Value("string"),
        "stereotyped_gender": datasets.Value("string"),
        "split": datasets.Value("string"),
        "source": datasets.Value("string"),
        "prompt": datasets.Value("string"),
    }
)

DEFAULT_MCQ_INSTRUCTION = "Answer with the letter of your choice, followed by a one-sentence explanation."


def render_mcq_prompt(question_text: str, options: Sequence[str], instruction: str = DEFAULT_MCQ_INSTRUCTION) -> str:
    """The chat-ready user message of a multiple-choice question.

    The question, then one lettered option per line (``"A) ..."``), then the instruction. The instruction asks for
    a sentence after the letter because a bare letter carries no gendered language for GenBit to score.

    Args:
        question_text (`str`): the question, including any context.
        options (`Sequence[str]`): the answer choices, in display order (at most 26).
        instruction (`str`, *optional*, defaults to `DEFAULT_MCQ_INSTRUCTION`): the last line of the message.
    """
    if not 0 < len(options) <= len(LETTERS):
        raise ValueError(f"a multiple-choice question needs 1 to {len(LETTERS)} options, got {len(options)}.")
    lines = "\n".join(f"{LETTERS[i]}) {option}" for i, option in enumerate(options))
    return f"{question_text}\n\n{lines}\n\n{instruction}"


def render_free_text_prompt(question_text: str, instruction: str | None = None) -> str:
    """The user message of an open-ended question: the question, then (optionally) an instruction on its own line."""
    return question_text if not instruction else f"{question_text}\n{instruction}"
