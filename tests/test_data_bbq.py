"""BBQ gender-identity conversion: counts, label semantics checked against the raw BBQ fields."""

import gzip
import json
from collections import Counter
from importlib import resources

import pytest

from diffusion_rl.bias.data import NUM_BBQ_GENDER_ITEMS, convert_bbq_item, load_bbq_gender


@pytest.fixture(scope="module")
def bbq():
    return load_bbq_gender()


@pytest.fixture(scope="module")
def raw():
    resource = resources.files("diffusion_rl.bias.data").joinpath("resources", "bbq", "Gender_identity.jsonl.gz")
    blob = resource.read_bytes()
    return [json.loads(line) for line in gzip.decompress(blob).decode().splitlines()]


def test_counts(bbq):
    assert len(bbq) == NUM_BBQ_GENDER_ITEMS
    assert Counter(bbq["context_condition"]) == {"ambiguous": 2836, "disambiguated": 2836}
    assert Counter(bbq["bbq_question_polarity"]) == {"neg": 2836, "nonneg": 2836}
    assert len(set(bbq["id"])) == len(bbq)


def test_labels_against_raw_fields(bbq, raw):
    undetermined = 0
    for record, item in zip(bbq, raw):
        tags = [item["answer_info"][f"ans{i}"][1] for i in range(3)]
        assert record["gold_option_index"] == item["label"]
        assert record["question_options"] == [item["ans0"], item["ans1"], item["ans2"]]
        assert record["bbq_unknown_option_index"] == tags.index("unknown")
        assert record["option_genders"][tags.index("unknown")] == "unknown"
        assert record["option_genders"].count("unknown") == 1
        if item["context_condition"] == "ambig":
            assert record["gold_option_index"] == tags.index("unknown")  # BBQ: ambiguous gold is always unknown
        target, stereo = record["bbq_target_option_index"], record["stereotyped_option_index"]
        if target is None:
            undetermined += 1
            assert stereo is None and record["anti_stereotyped_option_index"] is None
            continue
        # polarity adjustment: negative questions -> the target is the biased answer, otherwise the non-target
        if item["question_polarity"] == "neg":
            assert stereo == target
        else:
            assert stereo not in (target, tags.index("unknown"))
        assert {stereo, record["anti_stereotyped_option_index"], tags.index("unknown")} == {0, 1, 2}
        groups = item["additional_metadata"]["stereotyped_groups"]
        if groups == ["F"]:
            assert record["option_genders"][target] == "female"
        if groups == ["M"]:
            assert record["option_genders"][target] == "male"
        if "trans" in groups:
            assert tags[target].startswith("trans")
    assert undetermined == 16  # woman-vs-girl and man-vs-boy items


def test_hand_checked_item(bbq):
    r = bbq[1]  # "a man and a woman were late ... Who was the secretary?" (disambiguated, negative, target F)
    assert r["question_options"] == ["The man", "Not enough information", "The woman"]
    assert r["option_genders"] == ["male", "unknown", "female"]
    assert (r["gold_option_index"], r["stereotyped_option_index"], r["anti_stereotyped_option_index"]) == (0, 2, 0)
    assert r["stereotyped_gender"] == "female" and r["neutral_option_indices"] == [1]
    assert r["prompt"].endswith(
        "C) The woman\n\nAnswer with the letter of your choice, followed by a one-sentence explanation."
    )


def test_path_argument_and_errors(tmp_path, raw):
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in raw[:4]))
    assert load_bbq_gender(path)["id"] == [f"bbq-gender-{i}" for i in range(4)]
    with pytest.raises(FileNotFoundError, match="nyu-mll/BBQ"):
        load_bbq_gender(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="BBQ item 0"):
        convert_bbq_item({"ans0": "x"})
