"""Synthetic MCQ generator: determinism, uniqueness, label consistency, splits, nesting, position balance."""

import hashlib
import json
import random
import re
from collections import Counter

import pytest

from diffusion_rl.bias.data import FAMILIES, generate_mcq_dataset, load_synthetic_subset, mcq, render_answer
from diffusion_rl.bias.data.vocabulary import gendered_word_pairs, occupations, plural
from diffusion_rl.data import RECORD_FEATURES

N = 3_000  # per-test sample: enough for the statistical checks, ~0.1 s to generate


def content_hash(dataset) -> str:
    h = hashlib.sha256()
    for row in dataset:
        h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def train():
    return generate_mcq_dataset(N, seed=0)


@pytest.fixture(scope="module")
def test_split():
    return generate_mcq_dataset(N, seed=0, split="test")


def test_same_seed_same_content_and_fingerprint():
    a, b = generate_mcq_dataset(500, seed=7), generate_mcq_dataset(500, seed=7)
    assert content_hash(a) == content_hash(b)
    assert a._fingerprint == b._fingerprint
    c = generate_mcq_dataset(500, seed=8)
    assert content_hash(c) != content_hash(a) and c._fingerprint != a._fingerprint


def test_schema_and_edsl_shape(train):
    assert train.features == RECORD_FEATURES
    row = train[0]
    assert row["question_type"] == "multiple_choice"
    assert row["question_name"].isidentifier()  # edsl requires a valid identifier
    assert isinstance(row["question_options"], list) and len(row["question_options"]) >= 3


def test_unique_prompts_and_ids(train):
    assert len(set(train["prompt"])) == len(train)
    assert len(set(train["id"])) == len(train)


def test_families_are_balanced(train):
    counts = Counter(train["template_family"])
    assert set(counts) == set(FAMILIES)
    assert max(counts.values()) - min(counts.values()) <= 1  # shuffled rounds: balanced to within one round


def test_label_consistency_for_every_family(train):
    for row in train:
        genders, options = row["option_genders"], row["question_options"]
        s, a, g = row["stereotyped_option_index"], row["anti_stereotyped_option_index"], row["gold_option_index"]
        assert genders[s] == row["stereotyped_gender"]
        assert genders[a] == {"male": "female", "female": "male"}[row["stereotyped_gender"]]
        assert row["neutral_option_indices"] == [i for i, x in enumerate(genders) if x in ("neutral", "unknown")]
        assert len(set(options)) == len(options)
        if row["context_condition"] == "ambiguous":
            assert genders[g] in ("neutral", "unknown")  # nothing settles the gender: gold is the neutral/unknown one
        else:
            assert row["template_family"] in ("role_attribution", "coreference")
        # the prompt is the question, the lettered options one per line, then the instruction
        for letter, option in zip("ABCD", options):
            assert f"\n{letter}) {option}\n" in row["prompt"] + "\n"
        assert row["prompt"].startswith(row["question_text"] + "\n\n")
        assert "one-sentence" in row["prompt"] or "one sentence" in row["prompt"] or "single sentence" in row["prompt"]


def test_coreference_gold_is_the_stated_pronoun(train):
    rows = [r for r in train if r["template_family"] == "coreference"]
    stated = Counter()
    for r in rows:
        gold_word = r["question_options"][r["gold_option_index"]]
        context = r["question_text"].split('"')[1]
        # the pronoun stated in the context (first sentence), independent of the record's label fields
        first = context.split(". ")[0] + " " + context
        words = {w.strip(".,").lower() for w in first.split()}
        gender = r["option_genders"][r["gold_option_index"]]
        expected = {"male": {"he", "his"}, "female": {"she", "her"}, "neutral": {"they", "their"}}[gender]
        assert words & expected, (gold_word, context)
        stated[
            "pro"
            if r["gold_option_index"] == r["stereotyped_option_index"]
            else "anti"
            if r["gold_option_index"] == r["anti_stereotyped_option_index"]
            else "they"
        ] += 1
    for k in ("pro", "anti", "they"):  # a third each
        assert abs(stated[k] / len(rows) - 1 / 3) < 0.07


def test_role_attribution_disambiguation_names_the_gold_person(train):
    rows = [r for r in train if r["template_family"] == "role_attribution"]
    conditions = Counter(r["context_condition"] for r in rows)
    assert abs(conditions["ambiguous"] / len(rows) - 0.5) < 0.08
    for r in rows:
        if r["context_condition"] == "disambiguated":
            gold = r["question_options"][r["gold_option_index"]].lower()  # "the woman"
            assert gold in r["question_text"].lower().split(". ", 1)[1]


def test_no_position_bias(train):
    """Gold and stereotyped positions are ~uniform (chi-square, 5 % critical values) for 3- and 4-option items."""
    critical = {3: 5.991, 4: 7.815}
    for n_options in (3, 4):
        rows = [r for r in train if len(r["question_options"]) == n_options]
        for field in ("gold_option_index", "stereotyped_option_index"):
            counts = Counter(r[field] for r in rows)
            expected = len(rows) / n_options
            chi2 = sum((counts[i] - expected) ** 2 / expected for i in range(n_options))
            assert chi2 < critical[n_options] * 2, (n_options, field, counts)  # x2: margin against flakiness


def test_train_test_disjoint_templates_and_occupations(train, test_split):
    assert set(train["template_id"]).isdisjoint(test_split["template_id"])
    assert set(train["occupation"]).isdisjoint(test_split["occupation"])
    assert set(test_split["split"]) == {"test"}
    assert {o.stereotyped_gender for o in occupations("test")} == {"male", "female"}
    # exhaustively, not only on the sample: roles (occupations + neutral generic terms) never cross splits
    roles = {
        s: {o.name for o in occupations(s)} | {e[2] for _, e in mcq.T.split_items(mcq.T.GENERIC_TERMS, s)}
        for s in ("train", "test")
    }
    assert roles["train"].isdisjoint(roles["test"]) and len(roles["test"]) >= 15
    assert set(test_split["template_family"]) == set(FAMILIES)


def test_seen_roles_split_holds_out_frames_over_training_roles(train, test_split):
    seen = generate_mcq_dataset(N, seed=0, split="test_seen_roles")
    assert set(seen["split"]) == {"test_seen_roles"}
    # the sentence frames are the test ones, the roles the training ones
    assert set(seen["template_id"]) <= set(test_split["template_id"]) | set(
        generate_mcq_dataset(20_000, seed=1, split="test")["template_id"]
    )
    assert set(seen["template_id"]).isdisjoint(train["template_id"])
    assert set(seen["occupation"]) <= {o.name for o in occupations("train")} | {
        e[2] for _, e in mcq.T.split_items(mcq.T.GENERIC_TERMS, "train")
    }
    assert len(set(seen["occupation"])) >= 40
    # no evaluation prompt is a training prompt, even against a large training sample
    assert set(seen["prompt"]).isdisjoint(generate_mcq_dataset(30_000, seed=0)["prompt"])
    assert set(seen["template_family"]) == set(FAMILIES)


def test_prefix_property_and_nested_subsets():
    small = load_synthetic_subset(1_000, seed=3)
    big = load_synthetic_subset(2_000, seed=3)
    assert big.select(range(1_000))["id"] == small["id"]
    pool = generate_mcq_dataset(4_000, seed=3)
    assert pool.select(range(2_000))["prompt"] == big["prompt"]
    assert set(load_synthetic_subset(1_000, seed=4)["id"]) != set(small["id"])


def test_free_text_twins_share_scenario():
    both = generate_mcq_dataset(400, seed=1, question_type=None)
    mcq, free = both.select(range(0, 400, 2)), both.select(range(1, 400, 2))
    assert set(mcq["question_type"]) == {"multiple_choice"} and set(free["question_type"]) == {"free_text"}
    assert mcq["scenario_id"] == free["scenario_id"]
    for m, f in zip(mcq, free):
        assert f["question_text"].startswith(m["question_text"]) and f["prompt"] == f["question_text"]
        assert f["question_options"] == [] and f["gold_option_index"] is None
        assert (m["occupation"], m["stereotyped_gender"], m["context_condition"]) == (
            f["occupation"],
            f["stereotyped_gender"],
            f["context_condition"],
        )
    only_free = generate_mcq_dataset(300, seed=1, question_type="free_text")
    assert set(only_free["question_type"]) == {"free_text"} and len(set(only_free["prompt"])) == 300


def test_family_filter():
    ds = generate_mcq_dataset(50, families=["generic_term"])
    assert set(ds["template_family"]) == {"generic_term"}
    assert {"waiter", "waitress", "server"} & set(sum(ds["question_options"], [])) or len(ds) == 50


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"families": ["nope"]}, ValueError),
        ({"families": "pronoun_fill"}, TypeError),
        ({"split": "validation"}, ValueError),
        ({"question_type": "essay"}, ValueError),
        ({"num_records": -1}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    kwargs = {"num_records": 5, **kwargs}
    with pytest.raises(error):
        generate_mcq_dataset(**kwargs)


def test_subset_larger_than_pool_and_exhaustion(monkeypatch):
    with pytest.raises(ValueError, match="larger than the pool"):
        load_synthetic_subset(5_000, pool_size=4_000)
    # shrink the free-text pronoun_fill test space to 7 templates x 13 occupations = 91 prompts
    for name in ("PRONOUN_FILL_DETERMINERS", "PRONOUN_FILL_TIME_PHRASES", "PRONOUN_FILL_QUESTIONS"):
        monkeypatch.setattr(mcq.T, name, getattr(mcq.T, name)[:1])
    monkeypatch.setattr(mcq.T, "FREE_TEXT_INSTRUCTIONS", mcq.T.FREE_TEXT_INSTRUCTIONS[:1])
    monkeypatch.setattr(mcq, "_MAX_CONSECUTIVE_DUPLICATES", 2_000)
    assert len(generate_mcq_dataset(91, split="test", families=["pronoun_fill"], question_type="free_text")) == 91
    with pytest.raises(ValueError, match="ran out of unique records after 91"):
        generate_mcq_dataset(92, split="test", families=["pronoun_fill"], question_type="free_text")


def test_render_answer_styles(train):
    row = next(r for r in train if r["template_family"] == "hiring_opinion" and r["stereotyped_gender"] == "male")
    stereo = render_answer(row, row["stereotyped_option_index"], "stereotyped", random.Random(0))
    letter = "ABCD"[row["stereotyped_option_index"]]
    assert stereo.startswith(f"{letter}) {row['question_options'][row['stereotyped_option_index']]}. ")
    words = set(re.findall(r"[a-z]+", stereo.lower()))
    assert words & {"he", "men", "man"} and not words & {"she", "women", "woman", "they"}
    counter = render_answer(row, row["anti_stereotyped_option_index"], "counter", random.Random(0))
    words = set(re.findall(r"[a-z]+", counter.lower()))
    assert words & {"she", "women", "woman"} and not words & {"he", "men", "man"}
    neutral = render_answer(row, row["gold_option_index"], "neutral", random.Random(0))
    words = set(re.findall(r"[a-z]+", neutral.split(". ", 1)[1].lower()))
    gendered = {w for pair in gendered_word_pairs() for w in pair}
    assert not words & gendered
    # deterministic given the rng; explanation only for free-text records
    assert render_answer(row, 0, "neutral", random.Random(5)) == render_answer(row, 0, "neutral", random.Random(5))
    free = dict(row, question_options=[], question_type="free_text")
    assert render_answer(free, None, "neutral", random.Random(0)) == neutral.split(". ", 1)[1]
    # other wordings with the same slots
    own = render_answer(free, None, "neutral", random.Random(0), explanations=("Any {occ} will do.",))
    assert own == f"Any {row['occupation']} will do."
    with pytest.raises(ValueError):
        render_answer(row, 9, "neutral", random.Random(0))
    with pytest.raises(ValueError):
        render_answer(row, 0, "sarcastic", random.Random(0))
    with pytest.raises(ValueError, match="occupation"):
        render_answer(dict(row, occupation=None), 0, "neutral")


def test_plural_rules():
    assert [plural(w) for w in ("salesperson", "secretary", "member of Congress", "chef", "attendant")] == [
        "salespeople",
        "secretaries",
        "members of Congress",
        "chefs",
        "attendants",
    ]


def test_gendered_word_pairs_are_oriented():
    pairs = dict(gendered_word_pairs())
    assert pairs["he"] == "she" and pairs["waiter"] == "waitress" and pairs["man"] == "woman"
    assert "she" not in pairs


@pytest.mark.slow
def test_full_pool_is_unique_and_fast():
    import time

    start = time.perf_counter()
    pool = generate_mcq_dataset()
    elapsed = time.perf_counter() - start
    assert len(pool) == 150_000 and len(set(pool["prompt"])) == 150_000
    assert elapsed < 60
