"""Word lists behind the synthetic data: occupations with a stereotype direction, gendered word pairs, neutral names.

Occupations come from two public lists shipped in ``resources/`` (see ``resources/SOURCES.md``):

* WinoGender (Rudinger et al., 2018): 60 occupations with the U.S. Bureau of Labor Statistics % female. The stereotype
  direction is taken from BLS: ``<= 40 %`` female -> male-stereotyped, ``>= 60 %`` -> female-stereotyped, anything in
  between is "weak" (``stereotyped_gender=None``) and is not used by the generator, because a label such as "the
  stereotyped option is *he*" would be arbitrary for a 48 %-female occupation.
* WinoBias (Zhao et al., 2018): 20 male- and 20 female-dominated occupations (also BLS based). Used for occupations
  that WinoGender does not list; where both list an occupation, the WinoGender percentage decides.

The train/test occupation split is fixed (independent of any seed) so that the held-out split never shares an
occupation with training, whatever seed the user picks.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Literal

Gender = Literal["male", "female"]

# BLS thresholds that decide the stereotype direction (see module docstring).
MALE_MAX_PCT_FEMALE = 40.0
FEMALE_MIN_PCT_FEMALE = 60.0

# Every 5th occupation (per stereotype direction, ordered by % female, starting at the third) is held out for test.
TEST_OCCUPATION_STRIDE = 5

# Given names that are commonly used for any gender, so that a name alone never settles a person's gender.
NEUTRAL_FIRST_NAMES: tuple[str, ...] = (
    "Alex", "Ari", "Ash", "Avery", "Blake", "Cameron", "Casey", "Charlie", "Dakota", "Devon", "Drew", "Eden",
    "Elliot", "Emerson", "Finley", "Frankie", "Harper", "Hayden", "Jamie", "Jessie", "Jordan", "Jules", "Kai",
    "Kendall", "Kit", "Lane", "Lee", "Logan", "Marley", "Morgan", "Noel", "Oakley", "Parker", "Peyton", "Phoenix",
    "Quinn", "Reese", "Remy", "Riley", "River", "Robin", "Rowan", "Sage", "Sam", "Sawyer", "Shay", "Skyler",
    "Tatum", "Taylor", "Toni",
)  # fmt: skip

# Surnames without a grammatical gender marking (no -ova/-ska style endings).
NEUTRAL_SURNAMES: tuple[str, ...] = (
    "Adams", "Baker", "Chen", "Cohen", "Diaz", "Evans", "Garcia", "Haddad", "Jensen", "Kim", "Lopez", "Murphy",
    "Nguyen", "Novak", "Okafor", "Patel", "Rossi", "Silva", "Singh", "Tanaka", "Walker", "Young",
)  # fmt: skip

PRONOUNS: dict[str, dict[str, str]] = {
    # case -> gender -> pronoun
    "nominative": {"male": "he", "female": "she", "neutral": "they"},
    "possessive": {"male": "his", "female": "her", "neutral": "their"},
    "objective": {"male": "him", "female": "her", "neutral": "them"},
}

# Words that mark a gendered word as female when WinoBias lists a pair in both directions.
_FEMALE_WORDS = frozenset(
    "she her hers herself mom moms mommy mommies mother mothers daughter daughters sister sisters aunt aunts wife "
    "wives bride brides queen queens girl girls gal gals lady ladies chick chicks miss ma'am mrs. ms. female "
    "females niece nieces spinster spinsters belle belles nun nuns witch witches widow widows seamstress "
    "seamstress' lass lasses heroine heroines masseuse masseuses fiancee fiancees granddaughter granddaughters "
    "stepmother stepmothers stepdaughter stepdaughters grandmother grandmothers landlady landladies "
    "maidservant maidservants".split()
)
_FEMALE_SUFFIXES = ("woman", "women", "ess", "esses", "girl", "girls")


@dataclass(frozen=True)
class Occupation:
    """An occupation noun with the direction of its gender stereotype.

    Args:
        name (`str`): the noun as it appears in text, e.g. ``"engineer"`` or ``"construction worker"``.
        pct_female (`float`, *optional*): BLS % female from WinoGender, ``None`` for WinoBias-only occupations.
        stereotyped_gender (`str`, *optional*): ``"male"``, ``"female"`` or ``None`` when the statistics are weak.
        source (`str`): ``"winogender"`` or ``"winobias"``.
        split (`str`): ``"train"`` or ``"test"`` (fixed, see ``TEST_OCCUPATION_STRIDE``).
    """

    name: str
    pct_female: float | None
    stereotyped_gender: Gender | None
    source: str
    split: str = "train"

    @property
    def article(self) -> str:
        return indefinite_article(self.name)

    @property
    def plural(self) -> str:
        return plural(self.name)


def indefinite_article(noun_phrase: str) -> str:
    """``"a"`` or ``"an"`` by the first letter (enough for this vocabulary, which has no silent-h words)."""
    return "an" if noun_phrase[:1].lower() in "aeiou" else "a"


def plural(noun: str) -> str:
    """English plural of the occupation nouns used here (``salesperson`` -> ``salespeople``, ``member of X``...)."""
    head, sep, tail = noun.partition(" of ")
    if sep:
        return plural(head) + sep + tail
    if head.endswith("person"):
        return head[: -len("person")] + "people"
    if head.endswith("man") and not head.endswith(("human", "woman")):
        return head[:-3] + "men"
    if head.endswith("woman"):
        return head[:-5] + "women"
    if head.endswith("y") and head[-2:-1] not in ("a", "e", "i", "o", "u"):
        return head[:-1] + "ies"
    if head.endswith(("s", "sh", "ch", "x")):
        return head + "es"
    return head + "s"


def _resource_text(*parts: str) -> str:
    return resources.files("diffusion_rl.bias.data").joinpath("resources", *parts).read_text(encoding="utf-8")


def _direction(pct_female: float) -> Gender | None:
    if pct_female <= MALE_MAX_PCT_FEMALE:
        return "male"
    if pct_female >= FEMALE_MIN_PCT_FEMALE:
        return "female"
    return None


@functools.lru_cache(maxsize=1)
def all_occupations() -> tuple[Occupation, ...]:
    """Every occupation from WinoGender and WinoBias, including weakly stereotyped ones, with its fixed split."""
    by_name: dict[str, Occupation] = {}
    for row in csv.DictReader(_resource_text("winogender", "occupations-stats.tsv").splitlines(), delimiter="\t"):
        pct = float(row["bls_pct_female"])
        by_name[row["occupation"]] = Occupation(row["occupation"], pct, _direction(pct), "winogender")
    for gender, filename in (("male", "male_occupations.txt"), ("female", "female_occupations.txt")):
        for line in _resource_text("winobias", filename).splitlines():
            name = line.strip()
            if name and name not in by_name:
                by_name[name] = Occupation(name, None, gender, "winobias")
    # Fixed split: within each direction, order by % female (WinoBias-only ones by name, after) and hold out every
    # TEST_OCCUPATION_STRIDE-th one, so both directions and the whole % female range appear in the test split.
    test_names: set[str] = set()
    for gender in ("male", "female"):
        group = sorted(
            (o for o in by_name.values() if o.stereotyped_gender == gender),
            key=lambda o: (o.pct_female is None, o.pct_female or 0.0, o.name),
        )
        test_names.update(o.name for i, o in enumerate(group) if i % TEST_OCCUPATION_STRIDE == 2)
    return tuple(
        Occupation(o.name, o.pct_female, o.stereotyped_gender, o.source, "test" if o.name in test_names else "train")
        for o in sorted(by_name.values(), key=lambda o: o.name)
    )


def occupations(split: str | None = None) -> tuple[Occupation, ...]:
    """Occupations with a clear stereotype direction, optionally restricted to one split.

    Args:
        split (`str`, *optional*): ``"train"``, ``"test"`` or ``None`` for both.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}.")
    return tuple(
        o for o in all_occupations() if o.stereotyped_gender is not None and (split is None or o.split == split)
    )


def word_gender(word: str) -> Gender:
    """Gender of a gendered English word from the WinoBias lists (``"female"`` if female-marked, else ``"male"``)."""
    word = word.strip().lower()
    return "female" if word in _FEMALE_WORDS or word.endswith(_FEMALE_SUFFIXES) else "male"


@functools.lru_cache(maxsize=1)
def gendered_word_pairs() -> tuple[tuple[str, str], ...]:
    """Unique ``(male, female)`` word pairs from WinoBias ``generalized_swaps.txt`` and ``extra_gendered_words.txt``.

    The upstream files list most pairs in both directions and with stray whitespace; pairs are oriented with
    [`word_gender`] and deduplicated. Pairs whose two words get the same gender are dropped; upstream typos
    (``mentleman``, ``chairwomen``/``chairman``) are kept as they are.
    """
    pairs: dict[tuple[str, str], None] = {}
    for filename in ("generalized_swaps.txt", "extra_gendered_words.txt"):
        for line in _resource_text("winobias", filename).splitlines():
            words = line.lower().split()
            if len(words) != 2:
                continue
            a, b = words
            genders = (word_gender(a), word_gender(b))
            if genders == ("male", "female"):
                pairs[(a, b)] = None
            elif genders == ("female", "male"):
                pairs[(b, a)] = None
    return tuple(pairs)
