"""Deterministic generator of Expected-Parrot-style multiple-choice prompts about gender.

The seed project trained on 1k-4k prompts drawn from ~150k ``edsl`` ``QuestionMultipleChoice`` items mixing gendered
and gender-neutral answer choices. That data is not public; this module generates comparable items from public word
lists (WinoGender, WinoBias) and original templates, with the metadata rewards and evaluation need.

How determinism and nesting work: records come from one stream driven by ``random.Random`` seeded with
``(seed, split, families)``; each scenario is drawn independently, rendered, and kept if its prompt was not seen
before. ``generate_mcq_dataset(n)`` is therefore exactly the first ``n`` records of ``generate_mcq_dataset(m)`` for
any ``m >= n`` - a uniform random sample of the pool - which is what makes the seed's 1k/2k/3k/4k subsets nested
and cheap (a 1k subset does not need the 150k pool to be built).

Families (``FAMILIES``), each with a fixed train/test template split (`templates.split_items`) and the fixed
occupation split of `vocabulary.occupations`:

* ``pronoun_fill``: he / she / they for an occupation; ambiguous, gold = *they*.
* ``role_attribution``: BBQ-style "a man and a woman ... who is the nurse?" with an unknown answer; half ambiguous
  (gold = unknown), half disambiguated by a second sentence (gold = the person named, pro- or anti-stereotypical).
* ``hiring_opinion``: "who would make a better engineer?" with "gender does not matter" (3 or 4 options).
* ``generic_term``: waiter / waitress / server for a person with a gender-neutral name; gold = neutral term.
* ``coreference``: the context states the person's pronoun (stereotypical, anti-stereotypical or *they*, a third
  each); disambiguated, gold = the stated pronoun.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import pyarrow as pa

from . import templates as T
from .vocabulary import (
    NEUTRAL_FIRST_NAMES,
    NEUTRAL_SURNAMES,
    PRONOUNS,
    Occupation,
    indefinite_article,
    occupations,
    plural,
)

FAMILIES = ("pronoun_fill", "role_attribution", "hiring_opinion", "generic_term", "coreference")
QUESTION_TYPES = ("multiple_choice", "free_text")
DEFAULT_POOL_SIZES = {"train": 150_000, "test": 5_000, "test_seen_roles": 5_000}
# split -> (template split, role split). "test" holds out both the sentence frames and the roles; "test_seen_roles"
# holds out the frames only, over the training roles: a stereotype can only be learnt from data, so a model is judged
# on wordings it never saw about roles whose stereotype it could have learnt. Prompts of either test split never
# equal a training prompt, because their sentence frames are disjoint from the training ones.
SPLIT_PARTS = {"train": ("train", "train"), "test": ("test", "test"), "test_seen_roles": ("test", "train")}
SEED_SUBSET_SIZES = (1_000, 2_000, 3_000, 4_000)
# Bump when a change alters generated content: it is part of every dataset fingerprint.
GENERATOR_VERSION = "1"
# Consecutive duplicate draws after which a request is declared larger than what the split can produce.
_MAX_CONSECUTIVE_DUPLICATES = 20_000

_GENDERED = ("male", "female")
_OTHER = {"male": "female", "female": "male"}


@dataclass
class _Scenario:
    """One question before option shuffling; indices refer to ``options`` in this order."""

    family: str
    template_id: str
    question_text: str
    options: list[str]
    option_genders: list[str]
    gold: int
    stereotyped: int | None
    anti_stereotyped: int | None
    context_condition: str
    occupation: str
    stereotyped_gender: str


class _Pools:
    """The split-specific vocabulary: occupations, template lists, generic terms."""

    def __init__(self, split: str):
        frames, roles = SPLIT_PARTS[split]
        self.occupations: tuple[Occupation, ...] = occupations(roles)
        self.pronoun_templates = T.split_items(T.PRONOUN_FILL_TEMPLATES, frames)
        self.role_scenes = T.split_items(T.ROLE_SCENES, frames)
        self.hiring_templates = T.split_items(T.HIRING_TEMPLATES, frames)
        self.generic_templates = T.split_items(T.GENERIC_TERM_TEMPLATES, frames)
        self.generic_terms = T.split_items(T.GENERIC_TERMS, roles)  # the generic-term family's "roles"
        self.coref_contexts = T.split_items(T.COREFERENCE_CONTEXTS, frames)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _name(rng: random.Random) -> str:
    first = rng.choice(NEUTRAL_FIRST_NAMES)
    last = rng.choice(NEUTRAL_SURNAMES + ("",))
    return f"{first} {last}" if last else first


def _gender_indices(occupation_gender: str) -> tuple[int, int]:
    """(stereotyped, anti-stereotyped) indices when options are ordered (male, female, ...)."""
    return _GENDERED.index(occupation_gender), _GENDERED.index(_OTHER[occupation_gender])


def _pronoun_fill(rng: random.Random, pools: _Pools) -> _Scenario:
    index, (case, template) = rng.choice(pools.pronoun_templates)
    occ = rng.choice(pools.occupations)
    subject = f"{rng.choice(T.PRONOUN_FILL_DETERMINERS)} {occ.name}"
    time_phrase = rng.choice(T.PRONOUN_FILL_TIME_PHRASES)
    sentence = template.format(subject=subject)
    sentence = time_phrase + sentence[0].lower() + sentence[1:] if time_phrase else _cap(sentence)
    stereo, anti = _gender_indices(occ.stereotyped_gender)
    return _Scenario(
        family="pronoun_fill",
        template_id=f"pronoun_fill/{index}",
        question_text=f'{rng.choice(T.PRONOUN_FILL_QUESTIONS)}\n"{sentence}"',
        options=[PRONOUNS[case][g] for g in ("male", "female", "neutral")],
        option_genders=["male", "female", "neutral"],
        gold=2,
        stereotyped=stereo,
        anti_stereotyped=anti,
        context_condition="ambiguous",
        occupation=occ.name,
        stereotyped_gender=occ.stereotyped_gender,
    )


def _role_attribution(rng: random.Random, pools: _Pools) -> _Scenario:
    index, scene = rng.choice(pools.role_scenes)
    occ = rng.choice(pools.occupations)
    nouns = dict(zip(_GENDERED, rng.choice(T.PERSON_NOUNS)))
    first, second = ("male", "female") if rng.random() < 0.5 else ("female", "male")
    context = _cap(
        scene.format(
            A=f"{indefinite_article(nouns[first])} {nouns[first]}",
            B=f"{indefinite_article(nouns[second])} {nouns[second]}",
            place=rng.choice(T.ROLE_PLACES),
        )
    )
    question = rng.choice(T.ROLE_QUESTIONS).format(occ=occ.name, a=occ.article)
    unknown = rng.choice(T.UNKNOWN_OPTIONS)
    condition = rng.choice(("ambiguous", "disambiguated"))
    gold = 2
    if condition == "disambiguated":
        holder = rng.choice(_GENDERED)
        x, y = f"the {nouns[holder]}", f"the {nouns[_OTHER[holder]]}"
        extra = rng.choice(T.ROLE_DISAMBIGUATIONS)
        context += " " + extra.format(X=x, Y=y, X_cap=_cap(x), Y_cap=_cap(y), occ=occ.name, a=occ.article)
        gold = _GENDERED.index(holder)
    stereo, anti = _gender_indices(occ.stereotyped_gender)
    return _Scenario(
        family="role_attribution",
        template_id=f"role_attribution/{index}",
        question_text=f"{context} {question}",
        options=[f"The {nouns['male']}", f"The {nouns['female']}", unknown],
        option_genders=["male", "female", "unknown"],
        gold=gold,
        stereotyped=stereo,
        anti_stereotyped=anti,
        context_condition=condition,
        occupation=occ.name,
        stereotyped_gender=occ.stereotyped_gender,
    )


def _hiring_opinion(rng: random.Random, pools: _Pools) -> _Scenario:
    index, template = rng.choice(pools.hiring_templates)
    occ = rng.choice(pools.occupations)
    setting = rng.choice(T.HIRING_SETTINGS)
    male, female = rng.choice(T.HIRING_CANDIDATES)
    options = [male, female, rng.choice(T.HIRING_NEUTRAL_OPTIONS)]
    genders = ["male", "female", "neutral"]
    if rng.random() < 0.5:  # a 4-option variant whose extra choice is an "unknown" answer
        options.append(rng.choice(T.UNKNOWN_OPTIONS))
        genders.append("unknown")
    stereo, anti = _gender_indices(occ.stereotyped_gender)
    return _Scenario(
        family="hiring_opinion",
        template_id=f"hiring_opinion/{index}",
        question_text=template.format(occ=occ.name, a=occ.article, setting=setting, setting_cap=_cap(setting)),
        options=options,
        option_genders=genders,
        gold=2,
        stereotyped=stereo,
        anti_stereotyped=anti,
        context_condition="ambiguous",
        occupation=occ.name,
        stereotyped_gender=occ.stereotyped_gender,
    )


def _generic_term(rng: random.Random, pools: _Pools) -> _Scenario:
    index, template = rng.choice(pools.generic_templates)
    _, (male, female, neutral, description, stereotyped_gender) = rng.choice(pools.generic_terms)
    stereo, anti = _gender_indices(stereotyped_gender)
    return _Scenario(
        family="generic_term",
        template_id=f"generic_term/{index}",
        question_text=template.format(name=_name(rng), desc=description),
        options=[male, female, neutral],
        option_genders=["male", "female", "neutral"],
        gold=2,
        stereotyped=stereo,
        anti_stereotyped=anti,
        context_condition="ambiguous",
        occupation=neutral,
        stereotyped_gender=stereotyped_gender,
    )


def _coreference(rng: random.Random, pools: _Pools) -> _Scenario:
    index, context_template = rng.choice(pools.coref_contexts)
    case, followup = rng.choice(T.COREFERENCE_FOLLOWUPS)
    occ = rng.choice(pools.occupations)
    name = _name(rng)
    stated = rng.choice((occ.stereotyped_gender, _OTHER[occ.stereotyped_gender], "neutral"))
    context = context_template.format(
        name=name,
        a=occ.article,
        occ=occ.name,
        nom=PRONOUNS["nominative"][stated],
        poss=PRONOUNS["possessive"][stated],
    )
    text = f"{_cap(context)} {followup.format(name=name)}"
    stereo, anti = _gender_indices(occ.stereotyped_gender)
    order = ("male", "female", "neutral")
    return _Scenario(
        family="coreference",
        template_id=f"coreference/{index}",
        question_text=f'{rng.choice(T.COREFERENCE_QUESTIONS)}\n"{text}"',
        options=[PRONOUNS[case][g] for g in order],
        option_genders=list(order),
        gold=order.index(stated),
        stereotyped=stereo,
        anti_stereotyped=anti,
        context_condition="disambiguated",
        occupation=occ.name,
        stereotyped_gender=occ.stereotyped_gender,
    )


_BUILDERS = {
    "pronoun_fill": _pronoun_fill,
    "role_attribution": _role_attribution,
    "hiring_opinion": _hiring_opinion,
    "generic_term": _generic_term,
    "coreference": _coreference,
}


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _records(scenario: _Scenario, rng: random.Random, split: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The multiple-choice and free-text records of a scenario (options shuffled: no position bias)."""
    perm = list(range(len(scenario.options)))
    rng.shuffle(perm)
    new_index = {old: new for new, old in enumerate(perm)}
    options = [scenario.options[p] for p in perm]
    mcq_question = scenario.question_text
    mcq_prompt = T.render_mcq_prompt(mcq_question, options, rng.choice(T.MCQ_INSTRUCTIONS))
    free_question = T.render_free_text_prompt(scenario.question_text, rng.choice(T.FREE_TEXT_INSTRUCTIONS))
    scenario_id = f"{scenario.family}-{_short_hash(mcq_prompt)}"

    def indexed(i: int | None) -> int | None:
        return None if i is None else new_index[i]

    shared = {
        "scenario_id": scenario_id,
        "context_condition": scenario.context_condition,
        "template_family": scenario.family,
        "template_id": scenario.template_id,
        "occupation": scenario.occupation,
        "stereotyped_gender": scenario.stereotyped_gender,
        "split": split,
        "source": "synthetic",
    }
    genders = [scenario.option_genders[p] for p in perm]
    mcq = {
        "id": scenario_id,
        "question_name": f"{scenario.family}_{_short_hash(mcq_prompt)}",
        "question_text": mcq_question,
        "question_options": options,
        "question_type": "multiple_choice",
        "option_genders": genders,
        "neutral_option_indices": [i for i, g in enumerate(genders) if g in ("neutral", "unknown")],
        "stereotyped_option_index": indexed(scenario.stereotyped),
        "anti_stereotyped_option_index": indexed(scenario.anti_stereotyped),
        "gold_option_index": indexed(scenario.gold),
        "prompt": mcq_prompt,
        **shared,
    }
    free = {
        "id": f"{scenario.family}-{_short_hash(free_question)}-free",
        "question_name": f"{scenario.family}_{_short_hash(free_question)}_free",
        "question_text": free_question,
        "question_options": [],
        "question_type": "free_text",
        "option_genders": [],
        "neutral_option_indices": [],
        "stereotyped_option_index": None,
        "anti_stereotyped_option_index": None,
        "gold_option_index": None,
        "prompt": free_question,
        **shared,
    }
    return mcq, free


def _check_args(split: str, families: Sequence[str] | None, question_type: str | None) -> tuple[str, ...]:
    if split not in DEFAULT_POOL_SIZES:
        raise ValueError(f"split must be one of {sorted(DEFAULT_POOL_SIZES)}, got {split!r}.")
    if question_type is not None and question_type not in QUESTION_TYPES:
        raise ValueError(f"question_type must be one of {QUESTION_TYPES} or None (both), got {question_type!r}.")
    if families is None:
        return FAMILIES
    if isinstance(families, str):
        raise TypeError(f"families must be a list of family names, got the string {families!r}; wrap it in a list.")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown template families {unknown or families!r}; choose from {FAMILIES}.")
    return tuple(dict.fromkeys(families))  # keep order, drop repeats


def iter_mcq_records(
    *,
    seed: int = 0,
    split: str = "train",
    families: Sequence[str] | None = None,
    question_type: str | None = "multiple_choice",
) -> Iterator[dict[str, Any]]:
    """Endless stream of unique records (see [`generate_mcq_dataset`] for the arguments).

    Families take turns in shuffled rounds, so every prefix of the stream is balanced across families to within one
    round. With ``question_type=None`` each scenario yields its multiple-choice record followed by its free-text twin
    (same ``scenario_id``). Raises `ValueError` once the split cannot produce new records any more.
    """
    chosen = _check_args(split, families, question_type)
    pools = _Pools(split)
    # The seed string keeps the module's path from before the move to `diffusion_rl.bias`: it fixes every dataset.
    rng = random.Random(f"diffusion_rl.data.mcq/v{GENERATOR_VERSION}/{seed}/{split}/{','.join(chosen)}")
    seen: set[str] = set()
    duplicates = 0
    produced = 0
    while True:
        order = list(chosen)
        rng.shuffle(order)
        for family in order:
            while True:
                mcq, free = _records(_BUILDERS[family](rng, pools), rng, split)
                keys = [r["prompt"] for r in (mcq, free) if question_type in (None, r["question_type"])]
                if not any(k in seen for k in keys):
                    break
                duplicates += 1
                if duplicates > _MAX_CONSECUTIVE_DUPLICATES:
                    raise ValueError(
                        f"the {split!r} split of families {list(chosen)} ran out of unique records after {produced}; "
                        "ask for fewer records or more families."
                    )
            duplicates = 0
            seen.update(keys)
            for record in (mcq, free):
                if question_type in (None, record["question_type"]):
                    produced += 1
                    yield record


def _fingerprint(**kwargs: Any) -> str:
    return hashlib.sha256(repr(sorted(kwargs.items())).encode("utf-8")).hexdigest()[:32]


def records_to_dataset(
    records: Sequence[Mapping[str, Any]],
    fingerprint: str | None = None,
    features: datasets.Features = T.RECORD_FEATURES,
) -> datasets.Dataset:
    """Records -> `datasets.Dataset` with ``features`` (default `templates.RECORD_FEATURES`; nulls, not -1).

    ``fingerprint`` (a content or argument hash) replaces the random one `Dataset.from_dict` would pick, so that
    ``.map`` caching is reproducible across runs.
    """
    columns = {name: [r[name] for r in records] for name in features}
    table = pa.Table.from_pydict(columns, schema=features.arrow_schema)
    return datasets.Dataset(
        datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features), fingerprint=fingerprint
    )


def generate_mcq_dataset(
    num_records: int | None = None,
    *,
    seed: int = 0,
    split: str = "train",
    families: Sequence[str] | None = None,
    question_type: str | None = "multiple_choice",
) -> datasets.Dataset:
    """Generate synthetic gender-bias questions as a `datasets.Dataset` (deterministic in all arguments).

    Args:
        num_records (`int`, *optional*, defaults to `None`):
            Number of records; ``None`` gives the default pool (150,000 for ``"train"``, 5,000 for ``"test"``).
            The result is a prefix of any longer request with the same other arguments.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the local `random.Random` (no global RNG is touched).
        split (`str`, *optional*, defaults to `"train"`):
            ``"train"``, ``"test"`` (held-out templates *and* occupations) or ``"test_seen_roles"`` (held-out
            templates over the training occupations: the main evaluation of a model whose stereotypes were learnt
            from the training roles).
        families (`list[str]`, *optional*, defaults to `None`):
            Subset of ``FAMILIES``; ``None`` uses all five in equal shares.
        question_type (`str`, *optional*, defaults to `"multiple_choice"`):
            ``"multiple_choice"`` (edsl ``QuestionMultipleChoice``, what the seed trained on), ``"free_text"``
            (edsl ``QuestionFreeText``: the same scenarios without options) or ``None`` for both, paired by
            ``scenario_id`` (2 records per scenario).

    Returns:
        `datasets.Dataset` with the columns of `templates.RECORD_FEATURES`; its fingerprint is a hash of the
        arguments and ``GENERATOR_VERSION``, so ``.map`` caching is reproducible.
    """
    if num_records is None:
        num_records = DEFAULT_POOL_SIZES.get(split, 0)
    if isinstance(num_records, bool) or not isinstance(num_records, int) or num_records < 0:
        raise ValueError(f"num_records must be a non-negative int or None, got {num_records!r}.")
    chosen = _check_args(split, families, question_type)
    stream = iter_mcq_records(seed=seed, split=split, families=chosen, question_type=question_type)
    records = [next(stream) for _ in range(num_records)]
    fingerprint = _fingerprint(
        kind="mcq", version=GENERATOR_VERSION, n=num_records, seed=seed, split=split, families=chosen, qt=question_type
    )
    return records_to_dataset(records, fingerprint=fingerprint)


def load_synthetic_subset(
    size: int, *, seed: int = 0, pool_size: int = DEFAULT_POOL_SIZES["train"], question_type: str = "multiple_choice"
) -> datasets.Dataset:
    """A seed-stable random training subset of the synthetic pool, nested across sizes.

    ``load_synthetic_subset(1000)`` is contained in ``load_synthetic_subset(2000)`` (it is its first 1,000 rows) and
    both are the first rows of the ``pool_size`` pool, like the seed's 1k/2k/3k/4k subsets of ~150k prompts.

    Args:
        size (`int`): number of records (``SEED_SUBSET_SIZES`` are the seed's).
        seed (`int`, *optional*, defaults to `0`): generator seed.
        pool_size (`int`, *optional*, defaults to `150000`): the pool the subset is drawn from.
        question_type (`str`, *optional*, defaults to `"multiple_choice"`):
            the seed's data is multiple choice; ``"free_text"`` or ``None`` as in [`generate_mcq_dataset`].
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}.")
    if size > pool_size:
        raise ValueError(f"subset size {size} is larger than the pool ({pool_size}); raise pool_size or ask for less.")
    return generate_mcq_dataset(size, seed=seed, split="train", question_type=question_type)


def _explanation_slots(record: Mapping[str, Any], style: str) -> dict[str, str]:
    occupation = record.get("occupation")
    if not isinstance(occupation, str) or not occupation:
        raise ValueError(
            f"record {record.get('id')!r} has no 'occupation'; render_answer needs the synthetic metadata."
        )
    slots = {"occ": occupation, "occs": plural(occupation), "a": indefinite_article(occupation)}
    slots["A_cap"] = _cap(slots["a"])
    if style != "neutral":
        gender = record.get("stereotyped_gender")
        if gender not in _GENDERED:
            raise ValueError(
                f"record {record.get('id')!r} has stereotyped_gender={gender!r}; the {style!r} explanation needs "
                "'male' or 'female'."
            )
        gender = gender if style == "stereotyped" else _OTHER[gender]
        pronoun = PRONOUNS["nominative"][gender]
        noun = "man" if gender == "male" else "woman"
        slots.update(pron=pronoun, Pron=_cap(pronoun), noun=noun, nouns=plural(noun))
    return slots


def render_answer(
    record: Mapping[str, Any],
    option_index: int | None,
    explanation_style: str = "neutral",
    rng: random.Random | None = None,
    explanations: Sequence[str] | None = None,
) -> str:
    """A reference answer for a record: ``"B) <option text>. <one-sentence explanation>"``.

    Used to build supervised data, e.g. for a deliberately biased starting model. The explanation uses gendered
    pronouns for the stereotyped gender (``"stereotyped"``: *he* for male-stereotyped occupations, *she* for
    female-stereotyped ones), the other gender (``"counter"``), or none (``"neutral"``: *they*/*the person*).

    Args:
        record (`Mapping`): a synthetic record (needs ``question_options``, ``occupation``, ``stereotyped_gender``).
        option_index (`int`, *optional*): the chosen option; ``None`` for a free-text record (explanation only).
        explanation_style (`str`, *optional*, defaults to `"neutral"`): ``"stereotyped"``, ``"neutral"`` or
            ``"counter"``.
        rng (`random.Random`, *optional*): picks the explanation wording; ``random.Random(0)`` if not given.
        explanations (`Sequence[str]`, *optional*): the wordings to pick from (same slots) instead of
            ``EXPLANATIONS[explanation_style]``.
    """
    if explanation_style not in T.EXPLANATIONS:
        raise ValueError(f"explanation_style must be one of {tuple(T.EXPLANATIONS)}, got {explanation_style!r}.")
    rng = rng if rng is not None else random.Random(0)
    wordings = T.EXPLANATIONS[explanation_style] if explanations is None else explanations
    explanation = rng.choice(wordings).format(**_explanation_slots(record, explanation_style))
    options = record.get("question_options") or []
    if option_index is None:
        if options:
            raise ValueError(f"record {record.get('id')!r} is multiple choice; pass the chosen option_index.")
        return explanation
    if isinstance(option_index, bool) or not isinstance(option_index, int) or not 0 <= option_index < len(options):
        raise ValueError(
            f"option_index {option_index!r} is not a valid index into the {len(options)} options of record "
            f"{record.get('id')!r}."
        )
    return f"{T.LETTERS[option_index]}) {options[option_index].rstrip('.')}. {explanation}"
