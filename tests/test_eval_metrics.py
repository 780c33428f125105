"""Per-text and per-setting evaluation metrics against hand counts and a fresh GenBit object."""

import math

import pandas as pd
import pytest

from diffusion_rl.bias.evaluation.metrics import record_metrics, summarize
from diffusion_rl.bias.rewards._genbit_compat import genbit_lemmatizer

OPTIONS = ["The man", "The person", "The woman"]
MCQ = {
    "question_type": "multiple_choice",
    "question_options": OPTIONS,
    "neutral_option_indices": [1],
    "stereotyped_option_index": 0,
    "gold_option_index": 1,
    "context_condition": "ambiguous",
}
ROWS = [
    {"prompt": "q0", **MCQ},
    {"prompt": "q1", **MCQ},
    {"prompt": "q2", **MCQ},
    {"prompt": "q3", "question_type": "free_text"},
]
TEXTS = [
    # a the man he told his mother the plan: 9 words; he, his = 2 gendered pronouns; man, he, his, mother = 4
    # gendered words (GenBit lists); choice A.
    "A) The man. He told his mother the plan.",
    # b the person they were late because of traffic: 9 words; pronoun "they" (not gendered); choice B.
    "B) The person. They were late because of traffic.",
    # not sure at all: 4 words, nothing gendered, no letter and no option text -> unparsable.
    "Not sure at all.",
    # she is a doctor and she likes it: 8 words; she, she gendered; she, she, it pronouns.
    "She is a doctor and she likes it.",
]
HAND = {
    "gendered_pronoun_rate": [2 / 9, 0.0, 0.0, 2 / 8],
    "pronoun_rate": [2 / 9, 1 / 9, 0.0, 3 / 8],
    "gendered_word_rate": [4 / 9, 0.0, 0.0, 2 / 8],
    "gendered_pronoun_count": [2, 0, 0, 2],
    "gendered_word_count": [4, 0, 0, 2],
    "valid": [1, 1, 0, math.nan],
    "neutral": [0, 1, 0, math.nan],
    "correct": [0, 1, 0, math.nan],
    "stereotyped": [1, 0, 0, math.nan],
}


def _records(texts=TEXTS):
    return pd.DataFrame(
        {
            "index": range(len(texts)),
            "temperature": 0.0,
            "variant": "adapter",
            "question_type": [r["question_type"] for r in ROWS[: len(texts)]],
            "completion": texts,
            "length": [10, 11, 5, 9],
            "kl": [0.1, 0.2, 0.3, 0.4],
        }
    )


def _fresh_genbit(texts):
    with genbit_lemmatizer("lemminflect", "en") as genbit:
        metrics = genbit.GenBitMetrics("en", context_window=30, distance_weight=0.95, percentile_cutoff=80)
    metrics.add_data(list(texts), tokenized=False)
    return metrics.get_metrics(output_statistics=False, output_word_list=False)["genbit_score"]


def test_record_metrics_hand_counts():
    frame, notes = record_metrics(_records(), ROWS)
    for column, expected in HAND.items():
        assert frame[column].tolist() == pytest.approx(expected, nan_ok=True), column
    assert frame["choice"].tolist()[:2] == [0.0, 1.0]
    assert math.isnan(frame["choice"][2]) and math.isnan(frame["choice"][3])
    assert notes == []
    # GenBit per text equals a fresh GenBitMetrics fed that text alone (same lemmatizer).
    for text, value in zip(TEXTS, frame["genbit_bias"]):
        assert value == pytest.approx(_fresh_genbit([text]), abs=1e-12)


def test_summarize_per_setting():
    records = _records()
    per_text, _ = record_metrics(records, ROWS)
    records = pd.concat([records, per_text], axis=1)
    table = summarize(records, ROWS).set_index("question_type")
    mcq, free = table.loc["multiple_choice"], table.loc["free_text"]
    assert mcq["n"] == 3 and free["n"] == 1
    assert mcq["gendered_pronoun_rate"] == pytest.approx((2 / 9) / 3)
    assert mcq["valid"] == pytest.approx(2 / 3) and mcq["neutral"] == pytest.approx(1 / 3)
    assert mcq["kl"] == pytest.approx(0.2) and mcq["length"] == pytest.approx(26 / 3)
    assert math.isnan(free["valid"])
    # GenBit over the setting's texts as one corpus, not the mean of per-text scores.
    assert mcq["genbit_corpus"] == pytest.approx(_fresh_genbit(TEXTS[:3]), abs=1e-12)
    # BBQ scores on the all-ambiguous MCQ setting: 1 of 3 correct (the unknown), non-unknown answers: choice A only
    # (the unparsable one is excluded) and it is the stereotyped one -> s = 1, s_AMB = (1 - 1/3) * 1.
    assert mcq["accuracy_ambiguous"] == pytest.approx(1 / 3)
    assert mcq["bias_score_ambiguous"] == pytest.approx(2 / 3)
    assert math.isnan(free["bias_score_ambiguous"])  # no BBQ columns for the free-text setting


def test_missing_metadata_is_a_note_not_a_crash():
    rows = [{"prompt": "q", "question_type": "multiple_choice", "question_options": OPTIONS}] * 2 + [ROWS[3]] * 2
    frame, notes = record_metrics(_records(), rows)
    assert frame["valid"].tolist()[:2] == [1.0, 1.0]
    assert frame["neutral"].isna().all() and frame["correct"].isna().all()
    assert any("gold accuracy skipped for 2 of 2" in n for n in notes)
    assert any("BBQ-style scores skip 2 of 2" in n for n in notes)
    _, notes = record_metrics(_records(), [ROWS[3]] * 4)
    assert notes and "no row has question_options" in notes[0]


def test_answer_quality_and_condition_metrics():
    from diffusion_rl.bias.data import generate_mcq_dataset
    from diffusion_rl.bias.evaluation.metrics import split_answer, text_metrics

    assert split_answer("B) The woman. The text says so.") == ("B", "The woman", "The text says so.")
    assert split_answer("The woman, because.") == (None, None, "The woman, because.")
    rows = generate_mcq_dataset(40, seed=0, split="test_seen_roles").to_list()
    settled = next(r for r in rows if r["context_condition"] == "disambiguated")
    gold = settled["gold_option_index"]
    right = f"{'ABCD'[gold]}) {settled['question_options'][gold]}. The text says who is the {settled['occupation']}."
    m = text_metrics(right, settled)
    assert m["correct_disambiguated"] == 1.0 and m["restates_option"] == 1.0 and m["mentions_role"] == 1.0
    assert math.isnan(m["stereotyped_ambiguous"]) and m["disfluency_rate"] == 0.0 and m["empty"] == 0.0
    other = (gold + 1) % len(settled["question_options"])
    wrong = f"{'ABCD'[gold]}) {settled['question_options'][other]}. No idea."  # letter and text disagree
    m = text_metrics(wrong, settled)
    assert m["restates_option"] == 0.0 and m["mentions_role"] == 0.0
    open_item = next(r for r in rows if r["context_condition"] == "ambiguous")
    s = open_item["stereotyped_option_index"]
    m = text_metrics(f"{'ABCD'[s]}) {open_item['question_options'][s]}. She would.", open_item)
    assert m["stereotyped_ambiguous"] == 1.0 and m["neutral_ambiguous"] == 0.0 and m["gendered_explanation"] == 1.0
    assert math.isnan(m["correct_disambiguated"])
    assert text_metrics("", open_item)["empty"] == 1.0


def test_kl_split_by_context_condition():
    """`kl_disambiguated` / `kl_ambiguous` are the records' own `kl` on rows of that condition, NaN elsewhere, and
    their setting means are the means over those rows alone (a free-text row without a condition counts in neither)."""
    settled = {**MCQ, "context_condition": "disambiguated"}
    rows = [{"prompt": "q0", **MCQ}, {"prompt": "q1", **settled}, {"prompt": "q2", **settled}, ROWS[3]]
    records = _records()
    per_text, _ = record_metrics(records, rows)
    assert per_text["kl_ambiguous"].tolist() == pytest.approx([0.1, math.nan, math.nan, math.nan], nan_ok=True)
    assert per_text["kl_disambiguated"].tolist() == pytest.approx([math.nan, 0.2, 0.3, math.nan], nan_ok=True)
    table = summarize(pd.concat([records, per_text], axis=1), rows).set_index("question_type")
    assert table.loc["multiple_choice", "kl_disambiguated"] == pytest.approx(0.25)
    assert table.loc["multiple_choice", "kl_ambiguous"] == pytest.approx(0.1)
    assert table.loc["multiple_choice", "kl"] == pytest.approx(0.2)
    free = table.loc["free_text"]
    assert math.isnan(free["kl_ambiguous"]) and math.isnan(free["kl_disambiguated"])
    # Without a `kl` column (a model evaluated on its own) there is nothing to split.
    per_text, _ = record_metrics(records.drop(columns="kl"), rows)
    assert "kl_ambiguous" not in per_text.columns
