"""Atomic checkpoint saves with two nodes (issue 15.6): two torchrun "nodes" on localhost (gloo, one process each).

Every combination of a shared or node-local `output_dir` with `save_on_each_node` True or False must leave complete
`checkpoint-N` folders and no `.tmp-checkpoint-N`. Measured before the fix: shared + `save_on_each_node=True` crashed
node 1 with `FileNotFoundError` on the staging rename and left no `checkpoint-1`; node-local + `save_on_each_node=
False` left node 1's RNG files in `.tmp-checkpoint-N`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_rl.output_lock import LOCK_NAME
from diffusion_rl.resume import checkpoint_problems

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_two_nodes(base: Path, layout: str, save_on_each_node: bool) -> list[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    port = str(_free_port())
    nodes = []
    for node_rank in (0, 1):
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", port,
            str(ROOT / "tests" / "multinode_train.py"), str(base), layout, "1" if save_on_each_node else "0",
        ]  # fmt: skip
        nodes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [node.communicate(timeout=600)[0].decode(errors="replace") for node in nodes]
    for node_rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, f"node {node_rank} failed:\n{output[-6000:]}"
    return outputs


def _state_writers(outputs: list[str]) -> set[int]:
    marker = "trainer_state.json written by process "
    return {int(line[len(marker) :].split(":")[0]) for out in outputs for line in out.splitlines() if marker in line}


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "checkpoint" in p.name)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("save_on_each_node", [True, False], ids=["save_on_each_node", "main_node_saves"])
@pytest.mark.parametrize("layout", ["shared", "local"])
def test_two_node_checkpoints_are_complete(tmp_path, layout, save_on_each_node):
    outputs = _run_two_nodes(tmp_path, layout, save_on_each_node)
    full = dict(world_size=2)
    # One writer of trainer_state.json per filesystem: on a shared one the first node's main process only (two
    # nodes writing it at once left two JSON documents in one file); on node-local disks each node's, if asked.
    assert _state_writers(outputs) == ({0, 1} if layout == "local" and save_on_each_node else {0})
    if layout == "shared":
        assert _names(tmp_path) == ["checkpoint-1", "checkpoint-2"]  # and no .tmp-checkpoint-* / .old-checkpoint-*
        for step in (1, 2):
            for rank in (0, 1):  # both processes' RNG files reached the one shared folder
                assert checkpoint_problems(str(tmp_path / f"checkpoint-{step}"), process_index=rank, **full) == []
        assert not (tmp_path / LOCK_NAME).exists()  # released when the main process ended
        return
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    assert _names(node0) == _names(node1) == ["checkpoint-1", "checkpoint-2"]
    for step in (1, 2):
        assert checkpoint_problems(str(node0 / f"checkpoint-{step}"), process_index=0, **full) == []
        on_node1 = node1 / f"checkpoint-{step}"
        if save_on_each_node:  # each node-local disk holds a complete checkpoint for its processes
            assert checkpoint_problems(str(on_node1), process_index=1, **full) == []
        else:  # only the main node saves the model; node 1 keeps its own RNG files, promoted, not left in .tmp
            assert sorted(p.name for p in on_node1.iterdir()) == ["diffusion_rng_state_1.pth", "rng_state_1.pth"]
