"""`set_cpu_threads`: a CPU job that `accelerate launch` left on one thread gets the machine's cores."""

import pytest
import torch

from diffusion_rl import cpu_threads
from diffusion_rl.cpu_threads import set_cpu_threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in ("ACCELERATE_MIXED_PRECISION", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cpu_threads, "available_cores", lambda: 4)
    yield
    torch.set_num_threads(before)


def _launched_by_accelerate(monkeypatch, omp="1", local_world_size=None):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    if local_world_size is not None:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world_size))


def test_accelerate_default_of_one_thread_gets_the_cores(monkeypatch):
    _launched_by_accelerate(monkeypatch)
    torch.set_num_threads(1)
    assert set_cpu_threads(None, on_cpu=True) == 4
    assert torch.get_num_threads() == 4


def test_cores_are_shared_among_local_processes(monkeypatch):
    _launched_by_accelerate(monkeypatch, local_world_size=2)
    torch.set_num_threads(1)
    assert set_cpu_threads(None, on_cpu=True) == 2
    assert torch.get_num_threads() == 2


def test_more_processes_than_cores_keep_one_thread(monkeypatch):
    _launched_by_accelerate(monkeypatch, local_world_size=8)
    torch.set_num_threads(1)
    assert set_cpu_threads(None, on_cpu=True) is None
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(
    "omp, on_cpu, launched",
    [("3", True, True), ("1", False, True), ("1", True, False)],
    ids=["user-chosen-omp", "gpu-job", "no-accelerate-launcher"],
)
def test_left_alone(monkeypatch, omp, on_cpu, launched):
    if launched:
        _launched_by_accelerate(monkeypatch, omp=omp)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    torch.set_num_threads(1)
    assert set_cpu_threads(None, on_cpu=on_cpu) is None
    assert torch.get_num_threads() == 1


def test_requested_number_wins_everywhere(monkeypatch):
    _launched_by_accelerate(monkeypatch)
    assert set_cpu_threads(1, on_cpu=True) == 1
    assert torch.get_num_threads() == 1
    assert set_cpu_threads(3, on_cpu=False) == 3
    assert torch.get_num_threads() == 3


def test_bad_request_is_refused():
    with pytest.raises(ValueError, match="cpu_threads must be >= 1"):
        set_cpu_threads(0, on_cpu=True)


def test_script_flag_is_checked_when_parsed():
    from diffusion_rl.bias.train import BiasScriptArguments

    with pytest.raises(ValueError, match="cpu_threads"):
        BiasScriptArguments(cpu_threads=0)
    assert BiasScriptArguments(cpu_threads=2).cpu_threads == 2
