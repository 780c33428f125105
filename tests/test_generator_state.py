"""Generator states saved in a checkpoint: restored exactly on the same kind of device, and a checkpoint saved on
another kind (a CUDA state is 16 bytes, a CPU one 5,056) resumes with a warning instead of a bare RuntimeError."""

import logging

import torch
from transformers.utils import logging as hf_logging

from diffusion_rl.generator_state import generator_state_file, load_generator_states, save_generator_states


def test_states_round_trip(tmp_path):
    saved = torch.Generator().manual_seed(3)
    torch.rand(5, generator=saved)
    save_generator_states(str(tmp_path), 0, {"mask": saved})
    restored = torch.Generator().manual_seed(0)
    assert load_generator_states(str(tmp_path), 0, {"mask": restored})
    assert torch.equal(torch.rand(4, generator=restored), torch.rand(4, generator=saved))


def test_a_state_from_another_kind_of_device_is_skipped_with_a_warning(tmp_path, caplog):
    cuda_like = torch.zeros(16, dtype=torch.uint8)  # what torch.Generator("cuda").get_state() holds
    torch.save({"mask": cuda_like}, generator_state_file(str(tmp_path), 0))
    generator = torch.Generator().manual_seed(7)
    before = generator.get_state()
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            assert load_generator_states(str(tmp_path), 0, {"mask": generator})
    finally:
        hf_logging.disable_propagation()
    assert torch.equal(generator.get_state(), before)
    assert "another kind of device" in caplog.text and "16-byte" in caplog.text
