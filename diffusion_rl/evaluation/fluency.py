"""Fluency of generated text: the share of words that are not English words, and of words that repeat the previous one.

Why this metric: a policy that is pushed away from gendered words by a lexical reward can "win" by garbling its
answer (``"The giv g does does not reveal"``). Two cheap, model-free signals catch that: *non-words* (tokens that are
neither in a maintained English word list nor copied from the prompt) and *immediate repeats* (``"does does"``). Their
sum per word is the ``disfluency_rate``.

The word list is the union of the ``web2`` and ``gcide`` lists of the `english-words` package (about 263k lower-case
entries, no inflections); inflected forms are accepted through their lemmas from `lemminflect` (already used by the
GenBit reward). Words that occur in the prompt (names such as "Okafor", occupations such as "handyperson") and their
inflections are accepted too, so copying the question is never counted as a non-word.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

__all__ = ["disfluency_metrics", "english_word_set", "is_english_word", "words_of"]

# A word; an option letter such as the "B" of "B) The woman" is a label, not a word.
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?(?![A-Za-z')])")
_SINGLE_LETTER_WORDS = frozenset({"a", "i", "o"})
_CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m", "s'")


@functools.lru_cache(maxsize=1)
def english_word_set() -> frozenset[str]:
    """Lower-case English words of the `english-words` package (``web2`` and ``gcide`` lists), loaded once."""
    from english_words import get_english_words_set

    return frozenset(get_english_words_set(["web2", "gcide"], lower=True, alpha=True))


def words_of(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters with an optional apostrophe part: ``"doesn't"``, ``"person's"``)."""
    return [w.lower() for w in _WORD.findall(text)]


def _stems(word: str) -> set[str]:
    forms = {word}
    for clitic in _CLITICS:
        if word.endswith(clitic) and len(word) > len(clitic):
            base = word[: -len(clitic)]
            forms.add(base)
            if clitic == "n't":
                forms.update({base + "n", {"won": "will", "can": "can"}.get(base, base)})
    # plain plural/3rd-person -s, for words lemminflect does not know ("handypersons")
    forms.update(
        form[: -len(end)] for form in list(forms) for end in ("s", "es") if form.endswith(end) and len(form) > 3
    )
    from lemminflect import getAllLemmas

    for form in list(forms):
        for lemmas in getAllLemmas(form).values():
            forms.update(lemmas)
    return forms


@functools.lru_cache(maxsize=65536)
def is_english_word(word: str) -> bool:
    """Whether a lower-case ``word`` (or its lemma, or its stem without a clitic such as ``n't``) is English."""
    if len(word) == 1:  # the word lists contain every letter; only these three are words on their own
        return word.lower() in _SINGLE_LETTER_WORDS
    vocabulary = english_word_set()
    return any(form in vocabulary for form in _stems(word.lower()))


def disfluency_metrics(text: str, allowed: Iterable[str] = ()) -> dict[str, float]:
    """Non-word and immediate-repeat rates of one text.

    Args:
        text (`str`): the generated text.
        allowed (`Iterable[str]`, *optional*): extra accepted words, e.g. ``words_of(prompt)``; their inflections are
            accepted too.

    Returns:
        `dict[str, float]`: ``num_words``, ``non_word_rate``, ``repeat_rate`` and ``disfluency_rate`` (their sum), each
        per word; all rates are 0 for a text without words.
    """
    words = words_of(text)
    if not words:
        return {"num_words": 0, "non_word_rate": 0.0, "repeat_rate": 0.0, "disfluency_rate": 0.0}
    accepted = {form for word in allowed for form in _stems(word.lower())}
    non_words = sum(not (w in accepted or _stems(w) & accepted or is_english_word(w)) for w in words)
    repeats = sum(a == b for a, b in zip(words, words[1:]))
    n = len(words)
    return {
        "num_words": n,
        "non_word_rate": non_words / n,
        "repeat_rate": repeats / n,
        "disfluency_rate": (non_words + repeats) / n,
    }
