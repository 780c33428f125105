"""The `transformers` floor in pyproject.toml is a release with the features the library uses (issue 15.9).

The log-prob estimators pass a 2-D boolean `logits_to_keep` (only the scored completion positions go through the LM
head). It arrived with `transformers.modeling_utils.slice_logits_to_keep` in 5.21.0: checked by downloading the
wheels, 5.20.2 (the last 5.20 patch) has neither the function nor the boolean branch in Llama's forward, and 5.2
(the old floor) indexes a 2-D tensor as a slice and fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import transformers
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FIRST_WITH_BOOL_LOGITS_TO_KEEP = Version("5.21")


def _floor(package: str) -> Version:
    match = re.search(rf'"{package}>=([0-9.]+)"', PYPROJECT.read_text())
    assert match, f"{package} has no >= floor in pyproject.toml"
    return Version(match.group(1))


def test_the_floor_has_boolean_logits_to_keep():
    assert _floor("transformers") >= FIRST_WITH_BOOL_LOGITS_TO_KEEP
    assert Version(transformers.__version__) >= _floor("transformers")
    from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401  (absent before 5.21)


def test_boolean_logits_to_keep_keeps_exactly_the_true_positions(tiny_model):
    torch.manual_seed(0)
    input_ids = torch.randint(10, 100, (2, 7))
    keep = torch.zeros(2, 7, dtype=torch.bool)
    keep[0, [5, 6]] = True
    keep[1, [2, 4, 6]] = True  # a different count per row: the output is flattened to (K, V)
    with torch.no_grad():
        full = tiny_model(input_ids=input_ids).logits
        kept = tiny_model(input_ids=input_ids, logits_to_keep=keep).logits
    assert kept.shape == (5, full.shape[-1])
    torch.testing.assert_close(kept, full[keep])
