"""Tests for diffusion_rl.sft: LLaDA's masked-diffusion SFT loss and the sampler-shaped layout.

The training loop is `DiffusionSFTTrainer` (tests/test_sft_trainer.py)."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from diffusion_rl.sft import (
    forward_process,
    masked_diffusion_sft_loss,
    sft_loss_from_logits,
    tokenize_sft_pairs,
)

MASK_ID = 31


def _tiny_llama(seed: int = 0, vocab_size: int = 32) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    config.is_causal = False
    generator = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


class _Recorder(torch.nn.Module):
    """Forwards to a model and remembers what it was called with (to check the noised input)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = []

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.calls.append((input_ids.clone(), attention_mask, kwargs))
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


class _ZeroLogits(torch.nn.Module):
    """Uniform predictions: every masked token costs exactly log(V)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        keep = input_ids.shape[1] if logits_to_keep == 0 else logits_to_keep
        logits = torch.zeros(input_ids.shape[0], keep, self.vocab_size) + 0 * self.dummy
        return type("Out", (), {"logits": logits})()


def test_loss_matches_hand_computation_with_fixed_mask():
    # B=2, L=4, V=3. Row 0: prompt = positions 0-1, answer = 2-3; row 1: prompt = 0, answer = 1-3.
    logits = torch.tensor(
        [
            [[9.0, 9.0, 9.0], [9.0, 9.0, 9.0], [1.0, 2.0, 0.0], [0.5, -1.0, 2.0]],
            [[9.0, 9.0, 9.0], [0.0, 0.0, 3.0], [2.0, 1.0, 1.0], [-1.0, 0.0, 1.0]],
        ]
    )
    input_ids = torch.tensor([[0, 0, 1, 2], [0, 2, 0, 1]])
    answer_mask = torch.tensor([[False, False, True, True], [False, True, True, True]])
    masked = torch.tensor([[False, False, True, False], [False, True, False, True]])
    p_mask = torch.tensor([0.25, 0.5])

    def ce(row, target):
        return math.log(sum(math.exp(v) for v in row)) - row[target]

    row0 = ce([1.0, 2.0, 0.0], 1) / 0.25 / 2  # one masked token, answer length 2
    row1 = (ce([0.0, 0.0, 3.0], 2) + ce([-1.0, 0.0, 1.0], 1)) / 0.5 / 3  # two masked tokens, answer length 3
    expected = (row0 + row1) / 2
    loss = sft_loss_from_logits(logits, input_ids, masked, p_mask, answer_mask)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_scales_as_one_over_t():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 5, generator=generator)
    input_ids = torch.randint(0, 5, (3, 6), generator=generator)
    answer_mask = torch.ones(3, 6, dtype=torch.bool)
    answer_mask[:, :2] = False
    masked = answer_mask & (torch.rand(3, 6, generator=generator) < 0.7)
    p_mask = torch.tensor([0.2, 0.5, 0.9])
    base = sft_loss_from_logits(logits, input_ids, masked, p_mask, answer_mask)
    halved = sft_loss_from_logits(logits, input_ids, masked, p_mask * 2, answer_mask)
    assert halved.item() == pytest.approx(base.item() / 2, rel=1e-6)


def test_forward_process_never_masks_prompt_and_masks_with_rate_t():
    answer_mask = torch.zeros(4000, 60, dtype=torch.bool)
    answer_mask[:, 20:] = True
    masked, p_mask = forward_process(answer_mask, generator=torch.Generator().manual_seed(1), eps=1e-3)
    assert not masked[:, :20].any()
    assert float(p_mask.min()) >= 1e-3 and float(p_mask.max()) <= 1.0
    # t ~ U(0, 1): the masking probabilities are uniform on [eps, 1]
    assert float(p_mask.mean()) == pytest.approx(0.5, abs=0.02)
    # each row masks a Binomial(40, p_i) number of answer tokens: standardised residuals are ~N(0, 1)
    counts = masked.sum(dim=1).float()
    z = (counts - 40 * p_mask) / torch.sqrt(40 * p_mask * (1 - p_mask) + 1e-6)
    assert float(z.mean()) == pytest.approx(0.0, abs=0.1)
    assert float(z.std()) == pytest.approx(1.0, abs=0.1)
    again, p_again = forward_process(answer_mask, generator=torch.Generator().manual_seed(1), eps=1e-3)
    assert torch.equal(again, masked) and torch.equal(p_again, p_mask)


def test_one_over_t_weighting_is_unbiased():
    # With uniform predictions every masked token costs log V, and E[#masked / (p * n)] = 1 for every t,
    # so the expected loss is exactly log V whatever the distribution of t.
    vocab = 7
    input_ids = torch.randint(0, vocab - 1, (20000, 10), generator=torch.Generator().manual_seed(0))
    answer_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    answer_mask[:, 2:] = True
    loss = masked_diffusion_sft_loss(
        _ZeroLogits(vocab),
        input_ids,
        answer_mask,
        mask_token_id=vocab - 1,
        generator=torch.Generator().manual_seed(3),
    )
    assert loss.item() == pytest.approx(math.log(vocab), rel=0.03)


@pytest.mark.parametrize("left_padded", [True, False])
def test_prompt_is_clean_and_loss_matches_reference(left_padded):
    model = _Recorder(_tiny_llama())
    generator = torch.Generator().manual_seed(5)
    input_ids = torch.randint(0, MASK_ID, (3, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    if left_padded:  # answers share the trailing 5 positions -> only those go through the LM head
        attention_mask[0, :3] = 0
        answer_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        answer_mask[:, 7:] = True
    else:  # upstream layout: answers start at different positions
        answer_mask = torch.arange(12)[None, :] >= torch.tensor([4, 6, 8])[:, None]
    loss = masked_diffusion_sft_loss(
        model,
        input_ids,
        answer_mask,
        attention_mask=attention_mask,
        mask_token_id=MASK_ID,
        generator=torch.Generator().manual_seed(9),
    )
    noisy, _, kwargs = model.calls[-1]
    masked = noisy == MASK_ID
    assert masked.any()
    assert torch.equal(noisy[~answer_mask], input_ids[~answer_mask])  # prompt never noised
    assert torch.equal(noisy[~masked], input_ids[~masked])
    assert ("logits_to_keep" in kwargs) == left_padded
    # the same masking draws, recomputed independently
    _, p_mask = forward_process(answer_mask, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        full_logits = model.model(input_ids=noisy, attention_mask=attention_mask).logits
    reference = 0.0
    for i in range(3):
        targets = input_ids[i][masked[i]]
        ce = torch.nn.functional.cross_entropy(full_logits[i][masked[i]], targets, reduction="sum")
        reference += ce.item() / p_mask[i].item() / answer_mask[i].sum().item()
    assert loss.item() == pytest.approx(reference / 3, rel=1e-5)


def test_prompt_logits_do_not_enter_the_loss():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 10, 6, generator=generator)
    input_ids = torch.randint(0, 6, (2, 10), generator=generator)
    answer_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    answer_mask[:, 6:] = True
    masked, p_mask = forward_process(answer_mask, generator=generator)
    scrambled = logits.clone()
    scrambled[:, :6] = 1e4 * torch.randn(2, 6, 6, generator=generator)
    assert sft_loss_from_logits(scrambled, input_ids, masked, p_mask, answer_mask).item() == pytest.approx(
        sft_loss_from_logits(logits, input_ids, masked, p_mask, answer_mask).item(), rel=1e-6
    )


def test_prompt_lengths_equal_answer_mask():
    model = _tiny_llama()
    input_ids = torch.randint(0, MASK_ID, (2, 10), generator=torch.Generator().manual_seed(2))
    answer_mask = torch.arange(10)[None, :] >= torch.tensor([4, 6])[:, None]
    by_mask = masked_diffusion_sft_loss(
        model, input_ids, answer_mask, mask_token_id=MASK_ID, generator=torch.Generator().manual_seed(0)
    )
    by_lengths = masked_diffusion_sft_loss(
        model,
        input_ids,
        prompt_lengths=torch.tensor([4, 6]),
        mask_token_id=MASK_ID,
        generator=torch.Generator().manual_seed(0),
    )
    assert by_lengths.item() == pytest.approx(by_mask.item(), rel=1e-6)


def test_loss_errors():
    model = _tiny_llama()
    ids = torch.zeros(2, 4, dtype=torch.long)
    answer_mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="exactly one"):
        masked_diffusion_sft_loss(model, ids, mask_token_id=MASK_ID)
    with pytest.raises(ValueError, match="exactly one"):
        masked_diffusion_sft_loss(model, ids, answer_mask, prompt_lengths=torch.tensor([1, 1]), mask_token_id=MASK_ID)
    with pytest.raises(ValueError, match="mask token"):
        masked_diffusion_sft_loss(model, ids + MASK_ID, answer_mask, mask_token_id=MASK_ID)
    with pytest.raises(ValueError, match="bool"):
        forward_process(answer_mask.long())
    with pytest.raises(ValueError, match="outside answer_mask"):
        sft_loss_from_logits(torch.zeros(2, 4, 3), ids, answer_mask, torch.ones(2), answer_mask & False)


# ----------------------------------------------------------------------------------------- with the tiny tokenizer


PAIRS = [
    ("Who fixed the sink? A) he B) she C) they", "C) they. The plumber could be anyone."),
    ("Pick a word: A) chairman B) chairperson", "B) chairperson. It names the role, not the person."),
    ("Who is the nurse? A) the man B) the woman C) unknown", "C) unknown. The text does not say."),
    ("Who should we hire? A) him B) her C) whoever is best", "C) whoever is best. Skills matter."),
]


def test_tokenize_sft_pairs_layout(tiny_tokenizer):
    from diffusion_rl.data.chat import tokenize_prompts

    batch = tokenize_sft_pairs(tiny_tokenizer, [p for p, _ in PAIRS], [a for _, a in PAIRS], completion_length=40)
    prompts = tokenize_prompts(tiny_tokenizer, [p for p, _ in PAIRS])
    width = prompts["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"][:, :width], prompts["input_ids"])
    assert torch.equal(batch["attention_mask"][:, :width], prompts["attention_mask"])
    assert batch["input_ids"].shape[1] == width + 40
    assert not batch["answer_mask"][:, :width].any() and batch["answer_mask"][:, width:].all()
    eot = tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    eos = tiny_tokenizer.eos_token_id
    for row, (_, answer) in zip(batch["input_ids"][:, width:].tolist(), PAIRS):
        ids = tiny_tokenizer(answer, add_special_tokens=False)["input_ids"]
        assert row == ids + [eot] + [eos] * (40 - len(ids) - 1)
        assert tiny_tokenizer.decode(ids) == answer
    with pytest.raises(ValueError, match="completion_length"):
        tokenize_sft_pairs(tiny_tokenizer, [PAIRS[0][0]], [PAIRS[0][1]], completion_length=3)
    with pytest.raises(ValueError, match="answers"):
        tokenize_sft_pairs(tiny_tokenizer, [PAIRS[0][0]], [], completion_length=40)


def _fresh_tiny(tokenizer):
    from diffusion_rl.models.tiny import build_tiny_model

    return build_tiny_model(tokenizer, seed=0, hidden_size=32, num_hidden_layers=1, intermediate_size=64)


def _eval_loss(model, tokenizer, draws: int = 8) -> float:
    batch = tokenize_sft_pairs(tokenizer, [p for p, _ in PAIRS], [a for _, a in PAIRS], completion_length=24)
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        values = [
            masked_diffusion_sft_loss(
                model,
                batch["input_ids"],
                batch["answer_mask"],
                attention_mask=batch["attention_mask"],
                mask_token_id=tokenizer.mask_token_id,
                generator=generator,
            ).item()
            for _ in range(draws)
        ]
    return sum(values) / draws
