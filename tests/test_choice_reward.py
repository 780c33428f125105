import math

import pytest

from diffusion_rl.bias.rewards import NeutralChoiceReward, parse_choice

OPTIONS = ["The man", "Not enough information", "The woman"]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("B", 1),
        ("b", 1),
        ("b)", 1),
        ("B.", 1),
        ("(c)", 2),
        ("[A]", 0),
        ("The answer is (B) they", 1),
        ("The answer is C", 2),
        ("Answer: c", 2),
        ("answer is b.", 1),
        ("I think it's B.", 1),
        ("C. The woman", 2),
        ("A) The man\nB) Not enough information\nC) The woman\nAnswer: B", 1),  # echoed options, then the answer
        ("Not enough information.", 1),  # option text without a letter
        ("It was the woman, clearly.", 2),
        ("the MAN", 0),
        ("A or B", None),  # ambiguous letters
        ("(A) or (C)", None),
        ("The man and the woman", None),  # ambiguous option texts
        ("A man was late.", None),  # article, not a letter; "a man" is not "the man"
        ("Basically everything", None),  # letters inside words never count
        ("Absolutely, Carl agreed.", None),
        ("E", None),  # no such option
        ("", None),
        ("I don't know", None),
    ],
)
def test_parse_choice_table(completion, expected):
    assert parse_choice(completion, OPTIONS) == expected


def test_option_inside_longer_option():
    options = ["The man", "The old man", "Unknown"]
    assert parse_choice("It was the old man.", options) == 1
    assert parse_choice("It was the man.", options) == 0


def test_parse_choice_bad_input():
    with pytest.raises(TypeError):
        parse_choice(None, OPTIONS)
    with pytest.raises(ValueError):
        parse_choice("A", [])
    with pytest.raises(ValueError):
        parse_choice("A", "The man")


def columns(rows):
    keys = ["question_options", "context_condition", "neutral_option_indices", "gold_option_index"]
    keys.append("stereotyped_option_index")
    return {k: [r.get(k) for r in rows] for k in keys}


AMBIG = {
    "question_options": OPTIONS,
    "context_condition": "ambiguous",
    "neutral_option_indices": [1],
    "gold_option_index": 1,
    "stereotyped_option_index": 2,
}
DISAMBIG = {**AMBIG, "context_condition": "disambiguated", "gold_option_index": 0}
FREE_TEXT = {}


def test_neutral_choice_rewards():
    reward = NeutralChoiceReward(correct=1.0, wrong=-0.5, unparsable=-2.0)
    rows = [AMBIG, AMBIG, AMBIG, DISAMBIG, DISAMBIG, FREE_TEXT, {**AMBIG, "context_condition": "ambig"}]
    completions = ["B) Not enough information", "C", "hmm", "A", "B", "anything", "(b)"]
    values = reward(["p"] * len(rows), completions, **columns(rows))
    assert values == [1.0, -0.5, -2.0, 1.0, -0.5, None, 1.0]
    m = reward.last_metrics
    assert m["applicable"] == 6
    assert m["correct_rate"] == pytest.approx(3 / 6)
    assert m["unparsable_rate"] == pytest.approx(1 / 6)
    assert m["neutral_rate_ambiguous"] == pytest.approx(2 / 4)
    assert m["stereotyped_rate_ambiguous"] == pytest.approx(1 / 4)


def test_require_restated_option_counts_only_answers_that_say_what_they_chose():
    reward = NeutralChoiceReward(require_restated_option=True)
    assert reward.name == "neutral_choice_restated"
    rows = [AMBIG] * 6 + [DISAMBIG, DISAMBIG]
    completions = [
        "B) Not enough information. Nothing settles it.",  # the neutral option, restated: +1
        "(b) not enough INFORMATION. Nothing settles it.",  # case and brackets aside: +1
        "B) Cannot be determined. Nothing settles it.",  # the right letter, another option's text: unclear
        "B) The woman. She fits.",  # the right letter, the text of a wrong option: unclear
        "B",  # no restated option at all: unclear
        "C) The woman. She fits.",  # a restated wrong option: wrong
        "A) The man. The text says so.",  # disambiguated, gold restated: +1
        "A) The woman. The text says so.",  # gold letter, wrong text: unclear
    ]
    values = reward(["p"] * len(rows), completions, **columns(rows))
    assert values == [1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0, -1.0]
    assert reward.last_metrics["unparsable_rate"] == pytest.approx(4 / 8)
    assert reward.last_metrics["stereotyped_rate_ambiguous"] == pytest.approx(1 / 6)  # only the restated "C) ..."
    lenient = NeutralChoiceReward()(["p"] * len(rows), completions, **columns(rows))
    assert lenient == [1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0]  # the letter alone decides


def test_rows_without_metadata_are_not_applicable():
    reward = NeutralChoiceReward()
    assert reward(["p", "q"], ["A", "B"]) == [None, None]
    assert math.isnan(reward.last_metrics["correct_rate"])
    no_gold = {**DISAMBIG, "gold_option_index": None}
    assert reward(["p"], ["A"], **columns([no_gold])) == [None]


def test_logs_its_rates_through_log_metric():
    logged = {}
    reward = NeutralChoiceReward()
    texts = ["B) Not enough information", "she did"]
    reward(["p", "q"], texts, log_metric=logged.__setitem__, **columns([AMBIG, FREE_TEXT]))
    assert logged["choice/correct_rate"] == 1.0 and logged["choice/neutral_rate_ambiguous"] == 1.0
    assert "choice/applicable" not in logged
    assert logged["completions/gendered_pronoun_rate"] == pytest.approx(0.5 * 1 / 2)  # "she did": 1 of 2 words
    logged.clear()
    reward(["p"], ["A"], log_metric=logged.__setitem__)  # no applicable row: the NaN rates are not logged
    assert not any(k.startswith("choice/") for k in logged)


def test_bad_metadata():
    reward = NeutralChoiceReward()
    with pytest.raises(ValueError, match="context_condition"):
        reward(["p"], ["A"], **columns([{**AMBIG, "context_condition": "unclear"}]))
    with pytest.raises(ValueError, match="has 2 rows for 1"):
        reward(["p"], ["A"], **columns([AMBIG]) | {"context_condition": ["ambiguous", "ambiguous"]})


def test_no_lexical_reward_scores_a_wordless_answer_best():
    from diffusion_rl.bias.rewards.genbit import GenBitReward
    from diffusion_rl.bias.rewards.lexicon import GenderedLanguageReward

    completions = ["", " ... ", "B) he. He fits best, because most engineers are men.", "B) they. Anyone can."]
    prompts = ["Who is the engineer?"] * len(completions)
    rewards = (
        GenBitReward(),
        GenderedLanguageReward(),
        GenderedLanguageReward(pronouns_only=True),
        GenderedLanguageReward(pronouns_only=True, per="answer"),
    )
    for reward in rewards:
        scores = reward(prompts, completions)
        assert max(scores[:2]) < min(scores[2:]), (reward, scores)


def test_gendered_language_can_skip_rows_whose_context_settles_the_gender():
    from diffusion_rl.bias.rewards.lexicon import GenderedLanguageReward

    reward = GenderedLanguageReward(pronouns_only=True, only_where_gender_is_open=True)
    scores = reward(["q"] * 3, ["She did.", "She did.", "She did."],
                    context_condition=["ambiguous", "disambiguated", None])
    assert scores[1] is None and scores[0] == scores[2] < 0
