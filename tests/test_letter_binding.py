import re

import torch

from diffusion_rl.bias.default_model import load_default_model
from diffusion_rl.bias.letter_binding import letter_batch, letter_binding_probe


def test_probe_reads_the_letter_of_each_answer_and_restores_the_mode(tmp_path):
    model, tokenizer = load_default_model(tmp_path, log=None)
    batch, letter_at = letter_batch(tokenizer, 24, split="test_seen_roles", seed=1, completion_length=40)
    # The column of each answer's first token: its option line ("B) her"; the default model's tokenizer keeps the
    # line in one token), not padding or the chat template.
    firsts = [tokenizer.decode([i]) for i in batch["input_ids"][:, letter_at].tolist()]
    assert all(re.match(r"^[A-D]\) \S", text) for text in firsts), firsts
    assert len({text[0] for text in firsts}) > 1
    assert bool(batch["answer_mask"][:, letter_at].all()) and not bool(batch["answer_mask"][:, letter_at - 1].any())

    model.train()
    result = letter_binding_probe(model, tokenizer, num_prompts=24)
    assert model.training
    assert result["num_prompts"] == 24
    for name in ("given_answer", "all_masked"):
        assert 0.0 <= result[name] <= 1.0 and abs(result[name] * 24 - round(result[name] * 24)) < 1e-4
    # deterministic: no sampling anywhere
    assert letter_binding_probe(model, tokenizer, num_prompts=24) == result


def test_probe_is_perfect_for_a_model_that_answers_with_the_gold_letter(tmp_path):
    """A model whose logits put all mass on the token it is shown, except at masks where it puts it on the gold
    letter, scores 1: the probe compares with the answer's own letter at the right column."""
    _, tokenizer = load_default_model(tmp_path, log=None)
    batch, letter_at = letter_batch(tokenizer, 12, split="test_seen_roles", seed=1, completion_length=40)
    gold = batch["input_ids"][:, letter_at]

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"mask_token_id": tokenizer.mask_token_id})()

        def forward(self, input_ids, attention_mask=None):
            logits = torch.nn.functional.one_hot(input_ids, len(tokenizer)).float()
            logits[:, letter_at] = torch.nn.functional.one_hot(gold, len(tokenizer)).float()
            return type("O", (), {"logits": logits})()

    assert letter_binding_probe(Oracle(), tokenizer, num_prompts=12) == {
        "num_prompts": 12.0,
        "given_answer": 1.0,
        "all_masked": 1.0,
    }
