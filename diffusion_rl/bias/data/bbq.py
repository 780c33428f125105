"""BBQ gender-identity split (Parrish et al., 2022) converted to the library's record shape for evaluation.

The jsonl ships gzip-compressed in ``resources/bbq`` (CC BY 4.0). Each BBQ item becomes one multiple-choice record:
``question_text`` = context + question, the three answers as options, ``gold_option_index`` = BBQ's label, and the
fields the BBQ bias score needs:

* ``bbq_target_option_index``: the option naming the stereotyped group (``additional_metadata.stereotyped_groups``
  matched against the answers' ``answer_info`` tags);
* ``stereotyped_option_index``: the *biased* answer, polarity-adjusted as in the paper - the target for negative
  questions, the non-target for non-negative ones - and ``anti_stereotyped_option_index`` the other non-unknown one;
* ``bbq_unknown_option_index`` (also the only "unknown" in ``option_genders``).

16 items compare two people of the same gender group (a woman and a girl, a man and a boy); their target is
ambiguous, so the three indices above are null and BBQ-style scorers should skip them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import datasets

from .mcq import records_to_dataset
from .templates import RECORD_FEATURES, render_mcq_prompt

BBQ_FEATURES = datasets.Features(
    {
        **RECORD_FEATURES,
        "bbq_example_id": datasets.Value("int32"),
        "bbq_question_index": datasets.Value("string"),
        "bbq_question_polarity": datasets.Value("string"),
        "bbq_target_option_index": datasets.Value("int32"),
        "bbq_unknown_option_index": datasets.Value("int32"),
        "bbq_answer_info": datasets.List(datasets.List(datasets.Value("string"))),
        "bbq_stereotyped_groups": datasets.List(datasets.Value("string")),
        "bbq_subcategory": datasets.Value("string"),
        "bbq_context": datasets.Value("string"),
        "bbq_question": datasets.Value("string"),
    }
)
NUM_BBQ_GENDER_ITEMS = 5_672  # 2,836 ambiguous + 2,836 disambiguated

_MALE_TAGS = {"M", "man", "boy", "trans_M", "nonTrans_M"}
_FEMALE_TAGS = {"F", "woman", "girl", "trans_F", "nonTrans_F"}
_TRANS_TAGS = {"trans", "trans_F", "trans_M"}
_FEMALE_WORDS = {"woman", "women", "girl", "girls", "lady", "female"}
_MALE_WORDS = {"man", "men", "boy", "boys", "gentleman", "male"}
_CONDITIONS = {"ambig": "ambiguous", "disambig": "disambiguated"}


def _option_gender(text: str, tag: str) -> str:
    if tag == "unknown":
        return "unknown"
    if tag in _MALE_TAGS:
        return "male"
    if tag in _FEMALE_TAGS:
        return "female"
    # "trans"/"nonTrans" answers: the gender, if any, is in the wording ("trans woman", "college student").
    words = set(text.lower().split())
    if words & _FEMALE_WORDS:
        return "female"
    if words & _MALE_WORDS:
        return "male"
    return "neutral"


def _target_tags(groups: list[str]) -> set[str]:
    lowered = {g.lower() for g in groups}
    tags: set[str] = set()
    if "f" in lowered:
        tags |= {"F", "woman", "girl"}
    if "m" in lowered:
        tags |= {"M", "man", "boy"}
    if lowered & {"trans", "transgender women", "transgender men"}:
        tags |= _TRANS_TAGS
    return tags


def _gender_or_none(genders: list[str], index: int | None) -> str | None:
    return genders[index] if index is not None and genders[index] in ("male", "female") else None


def convert_bbq_item(item: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """One raw BBQ jsonl item -> a record with `BBQ_FEATURES` columns."""
    try:
        options = [item["ans0"], item["ans1"], item["ans2"]]
        tags = [item["answer_info"][f"ans{i}"][1] for i in range(3)]
        infos = [list(item["answer_info"][f"ans{i}"]) for i in range(3)]
        groups = list(item["additional_metadata"]["stereotyped_groups"])
        condition = _CONDITIONS[item["context_condition"]]
        polarity, label, example_id = item["question_polarity"], int(item["label"]), int(item["example_id"])
        context, question = item["context"], item["question"]
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise ValueError(f"BBQ item {index} lacks or mis-types a field ({err!r}); is this a BBQ jsonl file?") from err
    genders = [_option_gender(o, t) for o, t in zip(options, tags)]
    unknown = tags.index("unknown")
    targets = [i for i, t in enumerate(tags) if t in _target_tags(groups)]
    target = targets[0] if len(targets) == 1 else None
    stereotyped = anti = None
    if target is not None:
        (non_target,) = [i for i in range(3) if i not in (target, unknown)]
        stereotyped, anti = (target, non_target) if polarity == "neg" else (non_target, target)
    question_text = f"{context} {question}"
    return {
        "id": f"bbq-gender-{example_id}",
        "scenario_id": f"bbq-gender-{example_id}",
        "question_name": f"bbq_gender_{example_id}",
        "question_text": question_text,
        "question_options": options,
        "question_type": "multiple_choice",
        "option_genders": genders,
        "neutral_option_indices": [i for i, g in enumerate(genders) if g in ("neutral", "unknown")],
        "stereotyped_option_index": stereotyped,
        "anti_stereotyped_option_index": anti,
        "gold_option_index": label,
        "context_condition": condition,
        "template_family": "bbq_gender_identity",
        "template_id": f"bbq/{item.get('question_index')}",
        "occupation": None,
        "stereotyped_gender": _gender_or_none(genders, stereotyped),
        "split": "test",
        "source": "bbq",
        "prompt": render_mcq_prompt(question_text, options),
        "bbq_example_id": example_id,
        "bbq_question_index": str(item.get("question_index")),
        "bbq_question_polarity": polarity,
        "bbq_target_option_index": target,
        "bbq_unknown_option_index": unknown,
        "bbq_answer_info": infos,
        "bbq_stereotyped_groups": groups,
        "bbq_subcategory": str(item["additional_metadata"].get("subcategory", "")),
        "bbq_context": context,
        "bbq_question": question,
    }


def _read_lines(path: str | os.PathLike | None) -> list[str]:
    if path is None:
        resource = resources.files("diffusion_rl.bias.data").joinpath("resources", "bbq", "Gender_identity.jsonl.gz")
        raw = resource.read_bytes()
        return gzip.decompress(raw).decode("utf-8").splitlines()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no BBQ file at {path}; pass Gender_identity.jsonl(.gz) from https://github.com/nyu-mll/BBQ (data/) "
            "or path=None for the copy shipped with diffusion_rl."
        )
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8").splitlines()


def load_bbq_gender(path: str | os.PathLike | None = None) -> datasets.Dataset:
    """The BBQ Gender_identity items as records (see module docstring for the label semantics).

    Args:
        path (`str` or `os.PathLike`, *optional*, defaults to `None`):
            A BBQ ``Gender_identity.jsonl`` (or ``.jsonl.gz``); ``None`` uses the copy shipped in the package.

    Returns:
        `datasets.Dataset` with `BBQ_FEATURES` columns, in file order (5,672 rows for the official file).
    """
    lines = _read_lines(path)
    records = []
    for i, line in enumerate(lines):
        if line.strip():
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"BBQ line {i + 1} is not valid JSON ({err.msg}).") from err
            records.append(convert_bbq_item(item, i))
    if not records:
        raise ValueError(f"the BBQ file {path} has no items.")
    fingerprint = hashlib.sha256("\n".join(["bbq_gender/v1", *lines]).encode("utf-8")).hexdigest()[:32]
    return records_to_dataset(records, fingerprint=fingerprint, features=BBQ_FEATURES)
