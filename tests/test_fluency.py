"""Fluency metric: non-words (against the english-words lists + lemminflect lemmas) and immediate repeats."""

import pytest

from diffusion_rl.evaluation.fluency import disfluency_metrics, is_english_word, words_of


@pytest.mark.parametrize(
    "word, english",
    [
        ("engineers", True),  # inflection through its lemma
        ("described", True),
        ("doesn't", True),  # clitic
        ("person's", True),
        ("salespeople", True),
        ("a", True),
        ("g", False),  # the lists hold every letter; a lone letter other than a/i/o is not a word
        ("giv", False),
        ("mtt", False),
        ("kely", False),
    ],
)
def test_english_words(word, english):
    assert is_english_word(word) is english


def test_garbled_text_scores_its_non_words_and_repeats():
    metrics = disfluency_metrics("The giv g does does not reveal")  # 7 words: 2 non-words, 1 repeat
    assert metrics["num_words"] == 7
    assert metrics["non_word_rate"] == pytest.approx(2 / 7)
    assert metrics["repeat_rate"] == pytest.approx(1 / 7)
    assert metrics["disfluency_rate"] == pytest.approx(3 / 7)


def test_words_copied_from_the_prompt_and_option_letters_are_fine():
    prompt = "Okafor works as a handyperson. Who is the paralegal?"
    answer = "B) The handyperson. Okafor is one of the paralegals, and handypersons fix things."
    assert words_of("B) The woman.") == ["the", "woman"]
    assert disfluency_metrics(answer, allowed=words_of(prompt))["disfluency_rate"] == 0.0
    assert disfluency_metrics(answer)["non_word_rate"] > 0  # without the prompt, the name is not an English word


def test_no_words_is_zero_not_nan():
    assert disfluency_metrics("...")["disfluency_rate"] == 0.0 and disfluency_metrics("")["num_words"] == 0
