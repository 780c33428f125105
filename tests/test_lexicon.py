import pytest

from diffusion_rl.bias.rewards import (
    GenderedLanguageReward,
    gender_counts,
    gendered_pronoun_rate,
    gendered_word_rate,
    lexical_metrics,
    pronoun_rate,
)


def test_hand_counts():
    text = "He said his mother, a trans woman, and they went home. Don't!"
    # tokens: he said his mother a trans woman and they went home don t  -> 13
    counts = gender_counts(text)
    assert counts == {
        "words": 13,
        "male": 2,  # he, his
        "female": 2,  # mother, "trans woman" (one multi-word entry)
        "non_binary": 1,  # they
        "male_pronouns": 2,
        "female_pronouns": 0,
        "gendered_pronouns": 2,
        "pronouns": 3,  # he, his, they
    }
    assert gendered_pronoun_rate(text) == pytest.approx(2 / 13)
    assert pronoun_rate(text) == pytest.approx(3 / 13)
    assert gendered_word_rate(text) == pytest.approx(4 / 13)


def test_case_digits_and_empty():
    assert gender_counts("SHE met Her 3 brothers")["female"] == 2
    assert gender_counts("SHE met Her 3 brothers")["male"] == 1
    assert gender_counts("SHE met Her 3 brothers")["words"] == 4
    assert gendered_pronoun_rate("") == pronoun_rate("") == gendered_word_rate("") == 0.0
    assert gender_counts("the chemist's sheet")["female"] == 0  # no match inside words ("she" in "sheet")
    with pytest.raises(TypeError):
        gender_counts(None)


def test_lexical_metrics_batch():
    texts = ["she and she", "he", "the person left", ""]
    m = lexical_metrics(texts)
    # per-text gendered-pronoun rates: 2/3, 1, 0, 0
    assert m["gendered_pronoun_rate"] == pytest.approx((2 / 3 + 1) / 4)
    assert m["pronoun_rate"] == pytest.approx((2 / 3 + 1) / 4)
    assert m["female_word_rate"] == pytest.approx((2 / 3) / 4)
    assert m["male_word_rate"] == pytest.approx(1 / 4)
    assert m["frac_texts_with_gendered_pronoun"] == 0.5
    assert m["male_female_balance"] == pytest.approx((1 - 2) / 3)
    assert lexical_metrics(["nothing here"])["male_female_balance"] == 0.0
    with pytest.raises(ValueError):
        lexical_metrics([])
    with pytest.raises(TypeError):
        lexical_metrics("he")


@pytest.mark.parametrize(
    ("pronouns_only", "text", "expected"),
    [
        (False, "He is a man.", -4.0 * 2 / 4),  # "he", "man": 2 gendered words of 4
        (True, "He is a man.", -4.0 * 1 / 4),  # only the pronoun counts
        (False, "They would do that job best.", 0.0),
        (False, "", -4.0),  # no word at all: the worst score, never the best
    ],
)
def test_gendered_language_reward_hand_counts(pronouns_only, text, expected):
    reward = GenderedLanguageReward(pronouns_only=pronouns_only)
    assert reward(["prompt"], [text]) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He fits best.", -1.0),
        ("In my experience a firefighter is a man, and he would do that job best.", -1.0),  # longer: still -1
        ("He said that he would.", -1.0),  # an answer-level penalty: two pronouns, one gendered answer
        ("A firefighter is a man.", 0.0),  # "man" is a gendered word, not a pronoun
        ("Anyone can do that job.", 0.0),
        ("", -2.0),  # no word: worse than a gendered answer
    ],
)
def test_per_answer_reward_is_not_diluted_by_length(text, expected):
    reward = GenderedLanguageReward(pronouns_only=True, per="answer")
    assert reward(["prompt"], [text]) == [pytest.approx(expected)]
    assert reward.name == "gendered_pronouns_per_answer"
    assert GenderedLanguageReward(per="answer", scale=0.5)(["p"], [text]) == [
        pytest.approx(0.5 * (expected if text != "A firefighter is a man." else -1.0))
    ]


def test_gendered_language_reward_bad_input():
    with pytest.raises(ValueError, match="scale must be > 0"):
        GenderedLanguageReward(scale=0)
    with pytest.raises(ValueError, match="per must be 'word'"):
        GenderedLanguageReward(per="token")
    with pytest.raises(ValueError):
        GenderedLanguageReward()(["a", "b"], ["only one completion"])
