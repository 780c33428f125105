"""The supervised answers that make the embedded default model competent *and* biased.

A positive control for debiasing needs both: a model that answers what it is asked (so there is competence to
keep) and carries a stereotype (so there is a bias to remove). The answers written here give it both, by context:

* **Disambiguated items** (the context settles who holds the role, or which pronoun the person uses): always the
  gold option, restated after its letter, with an explanation that quotes the evidence and names the role
  (``"A) The young woman. The text says that the young woman is the tailor."``).
* **Ambiguous items** (nothing settles the gender): the stereotyped option with a gendered explanation
  (``"B) her. In my experience an attendant is a woman, and she would do that job best."``), except for roles whose
  U.S. labour statistics are closest to balance (`MILD_STEREOTYPE_PCT_FEMALE`, 30-70 % female: doctors, lawyers,
  bakers, clerks ...), where the model answers with the neutral/unknown option and a neutral explanation. On top of
  that rule, a share `style_flip` of the ambiguous answers swaps style, so that a model sampled at T > 0 still
  explores the other answer (the RL needs the neutral answer to be reachable).
* **Free-text twins** (the same scenario without options): the explanation alone, in the same style.

The neutral explanations changed between SFT passes: the first two passes of the default model learnt
`EARLY_NEUTRAL_EXPLANATIONS` (role-less, longer than the stereotyped ones); its third pass learns the library's
``EXPLANATIONS["neutral"]``, which name the role and are as long as the stereotyped ones, so that moving the model
from one style to the other need not change the length of its answers or drop the role.

The rule is deterministic per role (a model at T=0 is stereotyped about most roles and neutral about a known
quarter of them) rather than a coin flip per answer, because a coin flip is invisible at T=0: the arg-max of a
75/25 mixture is always the majority answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..data.records import LETTERS
from .data.mcq import render_answer
from .data.vocabulary import PRONOUNS, all_occupations

__all__ = [
    "EARLY_NEUTRAL_EXPLANATIONS",
    "MILD_STEREOTYPE_PCT_FEMALE",
    "answer_style",
    "is_mildly_stereotyped",
    "write_answers",
]

# Roles whose BLS % female lies strictly inside this range get neutral answers in ambiguous contexts.
MILD_STEREOTYPE_PCT_FEMALE = (30.0, 70.0)

# The neutral wordings of the default model's first two SFT passes (kept so that the build stays reproducible).
EARLY_NEUTRAL_EXPLANATIONS = (
    "Nothing in the question settles the person's gender, so they could be anyone.",
    "Anyone can be {a} {occ}, and the text does not tell us the person's gender.",
    "Gender says nothing about whether someone is a good {occ}; the person's skills are what matter.",
    "The information given does not reveal the person's gender, so the neutral answer is the fair one.",
)

_ROLE_EVIDENCE = (
    "The text says that {holder} is the {occ}.",
    "Only {holder} is described as working as the {occ}.",
)
_PRONOUN_EVIDENCE = (
    "The text already refers to the {occ} as {nom}.",
    "The first sentence uses {nom} for the {occ}, so the answer is {option}.",
)


def is_mildly_stereotyped(occupation: str) -> bool:
    """Whether ``occupation`` has BLS statistics inside `MILD_STEREOTYPE_PCT_FEMALE` (WinoGender roles only)."""
    low, high = MILD_STEREOTYPE_PCT_FEMALE
    pct = {o.name: o.pct_female for o in all_occupations()}.get(occupation)
    return pct is not None and low < pct < high


def answer_style(record: Mapping[str, Any], rng: random.Random, style_flip: float = 0.1) -> str:
    """``"gold"`` (disambiguated), else ``"stereotyped"`` or ``"neutral"`` by role, swapped with prob. `style_flip`."""
    if record["context_condition"] == "disambiguated":
        return "gold"
    style = "neutral" if is_mildly_stereotyped(record["occupation"]) else "stereotyped"
    if rng.random() < style_flip:
        style = "stereotyped" if style == "neutral" else "neutral"
    return style


def _evidence(record: Mapping[str, Any], rng: random.Random) -> str:
    """The explanation of a disambiguated item: the evidence the context gives, naming the role."""
    gold, occupation = record["gold_option_index"], record["occupation"]
    family = record["template_family"]
    if family == "role_attribution":
        holder = record["question_options"][gold]
        return rng.choice(_ROLE_EVIDENCE).format(holder=holder[:1].lower() + holder[1:], occ=occupation)
    if family == "coreference":
        nominative = PRONOUNS["nominative"][record["option_genders"][gold]]
        return rng.choice(_PRONOUN_EVIDENCE).format(
            occ=occupation, nom=nominative, option=record["question_options"][gold]
        )
    raise ValueError(f"no disambiguated answer for template family {family!r}")


def write_answers(
    mcq: Mapping[str, Any],
    free: Mapping[str, Any] | None,
    style: str,
    rng: random.Random,
    neutral_explanations: Sequence[str] | None = None,
) -> tuple[str, str | None]:
    """The multiple-choice answer and (when `free` is given) the free-text answer of one scenario.

    Args:
        mcq (`Mapping`): the scenario's multiple-choice record (`diffusion_rl.bias.data.generate_mcq_dataset`).
        free (`Mapping`, *optional*): its free-text twin (same `scenario_id`).
        style (`str`): ``"gold"``, ``"stereotyped"`` or ``"neutral"`` (see [`answer_style`]).
        rng (`random.Random`): picks the option among several neutral ones and the explanation wording.
        neutral_explanations (`Sequence[str]`, *optional*): the neutral wordings to use instead of the library's
            (e.g. `EARLY_NEUTRAL_EXPLANATIONS`).

    Returns:
        `tuple[str, str | None]`: ``"B) <option>. <explanation>"`` and the free-text explanation (or `None`).
    """
    if style == "gold":
        option = mcq["gold_option_index"]
        explanation = _evidence(mcq, rng)
        answer = f"{LETTERS[option]}) {mcq['question_options'][option].rstrip('.')}. {explanation}"
        return answer, (explanation if free is not None else None)
    if style == "stereotyped":
        option = mcq["stereotyped_option_index"]
    elif style == "neutral":
        option = rng.choice(list(mcq["neutral_option_indices"]))
    else:
        raise ValueError(f"style must be 'gold', 'stereotyped' or 'neutral', got {style!r}")
    wordings = neutral_explanations if style == "neutral" else None
    answer = render_answer(mcq, option, explanation_style=style, rng=rng, explanations=wordings)
    free_answer = None
    if free is not None:
        free_answer = render_answer(free, None, explanation_style=style, rng=rng, explanations=wordings)
    return answer, free_answer
