"""Load users' prompt data into the library's shape, and write datasets back to JSONL.

Accepted sources (``load_prompt_dataset``), the same as ``--dataset_name`` of TRL's scripts (`trl.ScriptArguments`):

* a `datasets.Dataset` (or a `datasets.DatasetDict` plus ``split``), or a list of dicts;
* a ``.jsonl``, ``.json`` (a list of objects), ``.csv`` or ``.parquet`` file;
* a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a folder of data files laid out like
  a Hub dataset repository (``train.jsonl``, ``data/test-00000-of-00001.parquet``, ...);
* a Hub dataset id (``owner/name``), loaded with `datasets.load_dataset` (``config_name`` is its configuration).

``split`` picks one split where the source has several (a `DatasetDict`, a Hub dataset, a folder of split files)
and means nothing elsewhere: a single file or a saved `Dataset` is one split already and is returned whatever
``split`` says, so ``--dataset_name my_prompts.jsonl`` works with TRL's default ``--dataset_train_split train`` and
``diffusion-rl evaluate --dataset_name my_eval.jsonl`` with its default ``--dataset_test_split test``.

Each record needs either a ``prompt`` (a string, or chat messages ``[{"role", "content"}, ...]``) or edsl-style
``question_text`` (+ ``question_options`` for multiple choice), from which the prompt is rendered exactly like the
synthetic data (`records.render_mcq_prompt`). Every other column is kept and reaches the reward functions as a
keyword argument (TRL convention). CSV cannot hold lists, so list columns (``question_options``, chat ``prompt``...)
are read from JSON-encoded cells, which is what ``export_jsonl``-then-convert or ``pandas.to_csv`` of JSON strings
produce.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from .chat import check_role
from .records import RECORD_FEATURES, render_free_text_prompt, render_mcq_prompt

_LIST_COLUMNS = ("question_options", "option_genders", "neutral_option_indices")
_INDEX_COLUMNS = ("stereotyped_option_index", "anti_stereotyped_option_index", "gold_option_index")


class PromptDataError(ValueError):
    """A record of a user dataset lacks a usable prompt (the message names the record and the field)."""


def _is_chat(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, Mapping) and isinstance(m.get("role"), str) for m in value)
    )


def _check_prompt(value: Any, index: int) -> str:
    """Validate one ``prompt`` value; returns its kind (``"text"`` or ``"chat"``)."""
    if isinstance(value, str):
        if not value.strip():
            raise PromptDataError(f"record {index}: field 'prompt' is an empty string.")
        return "text"
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        for j, message in enumerate(value):
            if not isinstance(message.get("role"), str):
                raise PromptDataError(
                    f"record {index}: field 'prompt', message {j} has no string 'role' ('system', 'user' or "
                    "'assistant')."
                )
            if not isinstance(message.get("content"), str):
                raise PromptDataError(f"record {index}: field 'prompt', message {j} has no string 'content'.")
            if not message["content"].strip():
                raise PromptDataError(
                    f"record {index}: field 'prompt', message {j} ({message['role']}) has empty content; remove the "
                    "message or give it text."
                )
            try:
                check_role(message["role"], f"record {index}: field 'prompt', message {j}")
            except ValueError as error:
                raise PromptDataError(str(error)) from None
        return "chat"
    raise PromptDataError(
        f"record {index}: field 'prompt' must be a string or a list of {{'role', 'content'}} messages, "
        f"got {type(value).__name__}."
    )


def render_record_prompt(record: Mapping[str, Any], index: int = 0) -> str:
    """The prompt of an edsl-style record (``question_text`` + ``question_options``), checked field by field."""
    text = record.get("question_text")
    if not isinstance(text, str) or not text.strip():
        raise PromptDataError(
            f"record {index}: field 'question_text' must be a non-empty string, got {type(text).__name__}; "
            "records need a 'prompt' or a 'question_text'."
        )
    options = record.get("question_options")
    # Without a question_type, a record with an options field (even an empty one) is meant as multiple choice.
    question_type = record.get("question_type") or ("free_text" if options is None else "multiple_choice")
    if question_type == "free_text":
        if options:
            raise PromptDataError(f"record {index}: a free_text question must not have 'question_options'.")
        return render_free_text_prompt(text)
    if question_type != "multiple_choice":
        raise PromptDataError(
            f"record {index}: field 'question_type' is {question_type!r}; use 'multiple_choice' or 'free_text'."
        )
    if not isinstance(options, list) or not options:
        raise PromptDataError(f"record {index}: field 'question_options' must be a non-empty list of strings.")
    bad = [o for o in options if not isinstance(o, str) or not o.strip()]
    if bad:
        raise PromptDataError(f"record {index}: field 'question_options' has non-string or empty values {bad!r}.")
    duplicates = sorted({o for o in options if options.count(o) > 1})
    if duplicates:
        raise PromptDataError(f"record {index}: field 'question_options' repeats {duplicates!r}; options must differ.")
    return render_mcq_prompt(text, options)


def _csv_value(column: str, cell: str) -> Any:
    """Undo CSV's flattening for the columns whose type the library knows or that hold JSON lists."""
    if column in _INDEX_COLUMNS:
        return int(cell) if cell.strip() else None
    if column in _LIST_COLUMNS or (column == "prompt" and cell.lstrip().startswith("[")):
        try:
            value = json.loads(cell) if cell.strip() else []
        except json.JSONDecodeError as err:
            if column == "prompt":
                return cell  # a plain prompt that happens to start with "["
            raise PromptDataError(f"CSV column {column!r} must hold JSON lists, got {cell!r:.60}.") from err
        return value if column != "prompt" or _is_chat(value) else cell
    return cell


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        return _read_text_file(path)
    except UnicodeDecodeError as error:
        # Without this the user got a bare UnicodeDecodeError naming neither the file nor the fix.
        utf16 = path.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")  # what Windows PowerShell's `>` writes
        hint = "; it starts like UTF-16" if utf16 else ""
        raise PromptDataError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}{hint}). Save it as UTF-8 (e.g. `iconv "
            "-f UTF-16 -t UTF-8`, or `Out-File -Encoding utf8` in PowerShell)."
        ) from error


def _read_text_file(path: Path) -> list[dict[str, Any]]:
    # "utf-8-sig" also reads files saved with a byte-order mark (Excel's "CSV UTF-8", Windows editors): read as plain
    # UTF-8, the mark became part of the first column's name and a CSV's 'prompt' column was not found.
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise PromptDataError(f"{path}:{line_no} is not valid JSON ({err.msg}).") from err
        return rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        if not isinstance(data, list):
            raise PromptDataError(f"{path} must contain a JSON list of records, got {type(data).__name__}.")
        return data
    if suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            return [{k: _csv_value(k, v) for k, v in row.items()} for row in csv.DictReader(f)]
    raise ValueError(f"unsupported file type {suffix!r} for {path}; use .jsonl, .json, .csv or .parquet.")


def _normalise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    kinds: set[str] = set()
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise PromptDataError(f"record {i} is a {type(row).__name__}, not a mapping of column -> value.")
        row = dict(row)
        if row.get("prompt") is None:
            if "question_text" not in row:
                raise PromptDataError(f"record {i} has neither a 'prompt' nor a 'question_text' field.")
            row["prompt"] = render_record_prompt(row, i)
        kinds.add(_check_prompt(row["prompt"], i))
        out.append(row)
    if len(kinds) > 1:
        raise PromptDataError("prompts mix plain strings and chat-message lists; use one form for the whole dataset.")
    return out


def _column_fits(values: list[Any]) -> bool:
    """Whether Arrow can store `values` as one column."""
    try:
        pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _column_type_problem(column: str, values: list[Any]) -> str:
    """Name the first record whose `column` value Arrow cannot store with the records before it."""
    low, high = 1, len(values)  # the shortest failing prefix: a prefix that fails stays failing when extended
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if _column_fits(values[:middle]) else (low, middle)
    bad = low - 1
    first = next(i for i, value in enumerate(values) if value is not None)
    return (
        f"column {column!r} holds values of different types: record {first} has {values[first]!r:.60} "
        f"({type(values[first]).__name__}), record {bad} has {values[bad]!r:.60} ({type(values[bad]).__name__}). A "
        "column must have one type in every record (null where it has no value); fix the records, or quote the "
        "numbers if the column holds text."
    )


def _to_dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    if not rows:
        raise PromptDataError("the source has no records.")
    # Every column of every record: `Dataset.from_list` takes the columns of the first record only and silently
    # dropped the others (e.g. `question_options` of the multiple-choice rows after a first free-text one).
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = {column: [row.get(column) for row in rows] for column in columns}
    try:
        dataset = datasets.Dataset.from_dict(table)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # a bare Arrow error named neither the column nor the record
        for column, values in table.items():
            if not _column_fits(values):
                raise PromptDataError(_column_type_problem(column, values)) from error
        raise
    # Our own exports come back with the library schema (int32 indices, nulls) rather than inferred types.
    if set(RECORD_FEATURES).issubset(dataset.column_names):
        features = dataset.features.copy()
        features.update(RECORD_FEATURES)
        dataset = dataset.cast(features)
    return dataset


_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _load_folder(path: Path) -> datasets.Dataset | datasets.DatasetDict:
    """A `save_to_disk` folder (`load_from_disk`), else a folder of data files (`load_dataset`, Hub repo layout)."""
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return datasets.load_from_disk(str(path))
    if not any(p.suffix.lower() in _FILE_SUFFIXES for p in path.rglob("*") if p.is_file()):
        raise FileNotFoundError(
            f"{path} is a folder with neither a `save_to_disk` dataset nor .jsonl/.json/.csv/.parquet files."
        )
    return datasets.load_dataset(str(path))


def _load_hub(name: str, config_name: str | None) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(name, config_name)
    except (ConnectionError, OSError, ValueError) as error:  # offline, unknown id, gated, bad config
        raise FileNotFoundError(
            f"{name!r} is neither a local file or folder nor a loadable Hub dataset ({type(error).__name__}: "
            f"{str(error)[:200]}). Pass a .jsonl/.json/.csv/.parquet file, a save_to_disk folder, or a Hub id "
            "reachable from here (unset HF_HUB_OFFLINE, or download it first)."
        ) from error


def load_prompt_dataset(
    source: datasets.Dataset | datasets.DatasetDict | str | os.PathLike | Sequence[Mapping[str, Any]],
    *,
    split: str | None = None,
    config_name: str | None = None,
) -> datasets.Dataset:
    """Load prompts for training or evaluation, rendering edsl-style records to a ``prompt`` column.

    Args:
        source (`Dataset`, `DatasetDict`, path, Hub id or list of dicts):
            The data: files by suffix (``.jsonl``, ``.json``, ``.csv``, ``.parquet``), a `save_to_disk` folder, a
            folder of data files, or a Hub dataset id (see the module docstring).
        split (`str`, *optional*, defaults to `None`):
            Which split to use where the source has several (may be omitted when it has exactly one); ignored by
            a single-split source (a file, a saved `Dataset`, a list of dicts).
        config_name (`str`, *optional*, defaults to `None`):
            Configuration of a Hub dataset (TRL's `dataset_config`).

    Returns:
        `datasets.Dataset` with a ``prompt`` column (string or chat messages) and every other source column.
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        source = _load_folder(Path(source))
    elif isinstance(source, str) and not Path(source).exists() and Path(source).suffix.lower() not in _FILE_SUFFIXES:
        source = _load_hub(source, config_name)  # not a local path: a Hub id, as in TRL's scripts
    if isinstance(source, datasets.DatasetDict):
        if split is None:
            if len(source) != 1:
                raise ValueError(f"the DatasetDict has splits {list(source)}; pass split=... to pick one.")
            split = next(iter(source))
        if split not in source:
            raise ValueError(f"split {split!r} not in the DatasetDict (it has {list(source)}).")
        source = source[split]
    if isinstance(source, datasets.Dataset):
        if "prompt" in source.column_names:
            kinds = {_check_prompt(p, i) for i, p in enumerate(source["prompt"])}
            if len(kinds) > 1:
                raise PromptDataError("prompts mix plain strings and chat-message lists; use one form.")
            return source
        if "question_text" not in source.column_names:
            raise PromptDataError(
                f"the dataset has neither a 'prompt' nor a 'question_text' column (columns: {source.column_names})."
            )
        return source.add_column("prompt", [render_record_prompt(r, i) for i, r in enumerate(source)])
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"no file at {path}; pass a local .jsonl/.json/.csv/.parquet file, a save_to_disk folder, a Hub "
                "dataset id, or a datasets.Dataset (for example from datasets.load_dataset(name, split=...))."
            )
        if path.suffix.lower() == ".parquet":
            return load_prompt_dataset(datasets.Dataset.from_parquet(str(path)))
        return _to_dataset(_normalise(_read_file(path)))
    if isinstance(source, Sequence) and not isinstance(source, (bytes, str)):
        return _to_dataset(_normalise(source))
    raise TypeError(f"unsupported source type {type(source).__name__}; pass a Dataset, a file path or list of dicts.")


def export_jsonl(dataset: datasets.Dataset | Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write records as JSON Lines (UTF-8, one object per line, nulls kept) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in dataset:
            f.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
    return path
