"""Lexical gender metrics: how often a text uses pronouns and gendered words.

These are the project's headline metrics (the seed result is "reduced pronoun usage, especially gendered
pronouns"). Unlike GenBit they need no co-occurrence statistics, so they are meaningful on a single short text.

Definitions (all rates are per word token, 0 for a text without words):

* **word tokens**: maximal runs of letters, lower-cased — GenBit's tokenizer (``[^\\W\\d_]+``), so ``"don't"`` is
  two tokens and digits and punctuation are not words. GenBit's multi-word entries (``"trans woman"``) are matched
  greedily (longest first) and count as one gendered word, but as their individual tokens in the word count.
* **gendered words**: tokens (or multi-word entries) in GenBit's English ``male.txt`` / ``female.txt`` lists
  (``he``, ``his``, ``mother``, ``chairman``, ...); ``non-binary.txt`` entries (``they``, ``ze``, ``person``...) are
  counted separately and are *not* gendered words.
* **gendered pronouns**: ``he him his himself`` (male) and ``she her hers herself`` (female).
* **pronouns**: personal, possessive and reflexive pronouns of every person and number: the gendered ones above
  plus ``i me my mine myself you your yours yourself yourselves it its itself we us our ours ourselves they them
  their theirs themself themselves``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence

from ...rewards.base import as_text, check_batch
from ._genbit_compat import genbit_word_list_dir

_WORD = re.compile(r"[^\W\d_]+")

MALE_PRONOUNS = frozenset({"he", "him", "his", "himself"})
FEMALE_PRONOUNS = frozenset({"she", "her", "hers", "herself"})
GENDERED_PRONOUNS = MALE_PRONOUNS | FEMALE_PRONOUNS
PRONOUNS = GENDERED_PRONOUNS | frozenset(
    "i me my mine myself you your yours yourself yourselves it its itself we us our ours ourselves "
    "they them their theirs themself themselves".split()
)


@functools.cache
def _word_lists() -> dict[str, tuple[frozenset[tuple[str, ...]], int]]:
    """GenBit's English lists as sets of token tuples, with the longest entry length (for greedy matching)."""
    folder = genbit_word_list_dir("en")
    lists = {}
    for gender, filename in (("male", "male.txt"), ("female", "female.txt"), ("non_binary", "non-binary.txt")):
        with open(os.path.join(folder, filename), encoding="utf-8") as f:
            entries = frozenset(tuple(_WORD.findall(line.lower())) for line in f)
        entries = frozenset(e for e in entries if e)
        lists[gender] = (entries, max(len(e) for e in entries))
    return lists


def _tokens(text: str) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"Expected a str, got {type(text).__name__}.")
    return _WORD.findall(text.lower())


def gender_counts(text: str) -> dict[str, int]:
    """Counts behind the rates of one text.

    Returns:
        `dict[str, int]` with ``words`` (word tokens), ``male``, ``female``, ``non_binary`` (GenBit word-list
        matches), ``male_pronouns``, ``female_pronouns``, ``gendered_pronouns`` and ``pronouns``.
    """
    tokens = _tokens(text)
    lists = _word_lists()
    longest = max(n for _, n in lists.values())
    counts = {"words": len(tokens), "male": 0, "female": 0, "non_binary": 0}
    i = 0
    while i < len(tokens):
        # Greedy longest match over all lists, like GenBit's multi-word-expression trie.
        for n in range(min(longest, len(tokens) - i), 0, -1):
            candidate = tuple(tokens[i : i + n])
            genders = [g for g, (entries, _) in lists.items() if candidate in entries]
            if genders:
                for g in genders:
                    counts[g] += 1
                i += n
                break
        else:
            i += 1
    counts["male_pronouns"] = sum(t in MALE_PRONOUNS for t in tokens)
    counts["female_pronouns"] = sum(t in FEMALE_PRONOUNS for t in tokens)
    counts["gendered_pronouns"] = counts["male_pronouns"] + counts["female_pronouns"]
    counts["pronouns"] = sum(t in PRONOUNS for t in tokens)
    return counts


def _rate(count: int, words: int) -> float:
    return count / words if words else 0.0


def gendered_pronoun_rate(text: str) -> float:
    """Gendered pronouns (he/him/his/himself, she/her/hers/herself) per word token."""
    c = gender_counts(text)
    return _rate(c["gendered_pronouns"], c["words"])


def pronoun_rate(text: str) -> float:
    """Personal, possessive and reflexive pronouns (any person, see the module docstring) per word token."""
    c = gender_counts(text)
    return _rate(c["pronouns"], c["words"])


def gendered_word_rate(text: str) -> float:
    """Words from GenBit's male and female lists (pronouns included) per word token."""
    c = gender_counts(text)
    return _rate(c["male"] + c["female"], c["words"])


def lexical_metrics(texts: Sequence[str]) -> dict[str, float]:
    """Batch summary of the lexical metrics.

    Returns:
        `dict[str, float]`: the per-text means ``pronoun_rate``, ``gendered_pronoun_rate``, ``gendered_word_rate``,
        ``male_word_rate``, ``female_word_rate``, ``non_binary_word_rate``; ``frac_texts_with_gendered_pronoun``;
        and the pooled balance ``male_female_balance = (male - female) / (male + female)`` over all gendered words
        of the batch, in [-1, 1] (> 0: more male words; 0 when there are none).
    """
    if isinstance(texts, str):
        raise TypeError("lexical_metrics expects a list of texts, not a single str.")
    if len(texts) == 0:
        raise ValueError("lexical_metrics needs at least one text.")
    counts = [gender_counts(t) for t in texts]
    n = len(counts)

    def mean_rate(*keys: str) -> float:
        return sum(_rate(sum(c[k] for k in keys), c["words"]) for c in counts) / n

    male, female = sum(c["male"] for c in counts), sum(c["female"] for c in counts)
    return {
        "pronoun_rate": mean_rate("pronouns"),
        "gendered_pronoun_rate": mean_rate("gendered_pronouns"),
        "gendered_word_rate": mean_rate("male", "female"),
        "male_word_rate": mean_rate("male"),
        "female_word_rate": mean_rate("female"),
        "non_binary_word_rate": mean_rate("non_binary"),
        "frac_texts_with_gendered_pronoun": sum(c["gendered_pronouns"] > 0 for c in counts) / n,
        "male_female_balance": (male - female) / (male + female) if male + female else 0.0,
    }


def completion_metrics(completions: Sequence[str]) -> dict[str, float]:
    """The lexical rates of a batch under the `completions/` prefix (the numeric entries of `lexical_metrics`)."""
    metrics = lexical_metrics(completions)
    return {f"completions/{k}": v for k, v in metrics.items() if isinstance(v, int | float)}


def log_completion_metrics(log_metric: Callable[[str, float], None] | None, completions: Sequence) -> None:
    """Report the batch's lexical rates (`completion_metrics`) through TRL's `log_metric` reward kwarg, if given.

    Every bias reward calls it, so a run with any of them logs ``completions/gendered_pronoun_rate`` etc.; with
    several, the trainer averages identical values. A user's own reward logs nothing gender-specific.
    """
    if log_metric is None or not len(completions):
        return
    texts = [as_text(c, "completions", i) for i, c in enumerate(completions)]
    for name, value in completion_metrics(texts).items():
        log_metric(name, value)


def has_words(text: str) -> bool:
    """Whether ``text`` has at least one word token (see the module docstring)."""
    return _WORD.search(text) is not None


class GenderedLanguageReward:
    """Reward `-scale * rate` of gendered words (or only gendered pronouns) per completion, or `-scale` per answer
    that uses any (`per="answer"`).

    Why it exists: GenBit scores "he" and "she" alike, so a per-text `GenBitReward` alone can be satisfied by *mixing*
    genders ("a firefighter is a woman, and he would ...") instead of writing neutrally; we measured exactly that on
    the embedded default model (docs/default_model.md). This term pays for neutral wording directly and is the lever
    behind the seed's headline result, "reduced pronoun usage, especially gendered pronouns".

    Args:
        scale (`float`, *optional*):
            Multiplier of the rate (`per="word"`, default 4: rates are ~0.05-0.2 for gendered text, so 4 puts the
            term on the scale of GenBit's per-text bias) or the penalty of a gendered answer (`per="answer"`,
            default 1: the scale of `NeutralChoiceReward`).
        pronouns_only (`bool`, *optional*, defaults to `False`):
            Count only gendered pronouns (`gendered_pronoun_rate`) instead of every word in GenBit's male and
            female lists (`gendered_word_rate`).
        only_where_gender_is_open (`bool`, *optional*, defaults to `False`):
            Score only rows whose `context_condition` column is not ``"disambiguated"``; the others get `None` (the
            term does not apply). Where the context settles the gender ("Alex ... said that she ...", "the woman
            works there as the tailor"), a gendered word can be the right answer, so penalising it would trade
            accuracy for the metric.
        per (`str`, *optional*, defaults to `"word"`):
            `"word"`: `-scale * rate`, the per-word rate. `"answer"`: `-scale` if the completion uses any gendered
            word (pronoun), else 0. A rate can be lowered by *diluting*: we measured an adapter that kept every
            pronoun and switched to explanations 75 % longer (docs/results.md). An answer-level penalty only moves
            when the pronoun goes, whatever the length.

    A completion without any word gets the worst score: `-scale` with `per="word"` (as if every word were gendered),
    `-2 * scale` with `per="answer"` (worse than a gendered answer). Saying nothing must never be the cheapest way to
    use no gendered word.
    """

    def __init__(
        self,
        scale: float | None = None,
        pronouns_only: bool = False,
        only_where_gender_is_open: bool = False,
        per: str = "word",
    ):
        from ...validation import check_bool, check_float

        if per not in ("word", "answer"):
            raise ValueError(f"per must be 'word' (a rate) or 'answer' (any gendered word), got {per!r}.")
        scale = (4.0 if per == "word" else 1.0) if scale is None else scale
        check_float("scale", scale, minimum=0.0, min_inclusive=False)
        # A string such as "false" would be truthy.
        check_bool("pronouns_only", pronouns_only)
        check_bool("only_where_gender_is_open", only_where_gender_is_open)
        self.scale = float(scale)
        self.pronouns_only = pronouns_only
        self.only_where_gender_is_open = only_where_gender_is_open
        self.per = per
        self.name = ("gendered_pronouns" if pronouns_only else "gendered_language") + (
            "_per_answer" if per == "answer" else ""
        )

    def __call__(self, prompts: list[str], completions: list, log_metric=None, **kwargs) -> list[float | None]:
        check_batch(prompts, completions)
        rate = gendered_pronoun_rate if self.pronouns_only else gendered_word_rate
        conditions = kwargs.get("context_condition") or [None] * len(completions)
        rewards: list[float | None] = []
        for i, completion in enumerate(completions):
            text = as_text(completion, "completion", i)
            if self.only_where_gender_is_open and str(conditions[i]).lower().startswith("disambig"):
                rewards.append(None)
            elif not has_words(text):
                rewards.append(-self.scale * (2.0 if self.per == "answer" else 1.0))
            elif self.per == "answer":
                rewards.append(-self.scale if rate(text) > 0 else 0.0)
            else:
                rewards.append(-self.scale * rate(text))
        log_completion_metrics(log_metric, completions)
        return rewards
