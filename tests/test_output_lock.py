"""One run per output folder (issue 15.5): a second run fails fast naming the first; stale locks are taken over.

The "other runs" are real processes (`python -c`), so liveness is probed for real: a live pid, a dead one, a pid
reused by a younger process, another host.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from diffusion_rl.output_lock import LOCK_NAME, OutputDirLock, OutputDirLockedError, acquire_output_dir_lock

HOLD = """
import sys, time
from diffusion_rl.output_lock import OutputDirLock
OutputDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
{after}
"""


def _run(out, after: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(after=after), str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_fails_fast_naming_the_first(tmp_path):
    out = tmp_path / "out"
    holder = _run(out, "time.sleep(60)")
    try:
        owner = json.loads((out / LOCK_NAME).read_text())
        assert owner["pid"] == holder.pid and owner["host"] == socket.gethostname() and owner["started"] > 0
        with pytest.raises(OutputDirLockedError, match=rf"is in use by another run \(pid {holder.pid} on "):
            OutputDirLock(str(out)).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_when_the_process_ends(tmp_path):
    out = tmp_path / "out"
    holder = _run(out, "")  # exits normally: atexit removes the file
    holder.wait(timeout=30)
    assert not (out / LOCK_NAME).exists()
    OutputDirLock(str(out)).acquire().release()


def test_a_killed_run_leaves_a_stale_lock_that_is_taken_over(tmp_path, caplog):
    out = tmp_path / "out"
    holder = _run(out, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    holder.wait(timeout=30)
    assert (out / LOCK_NAME).exists()  # SIGKILL skips atexit
    lock = OutputDirLock(str(out)).acquire()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (out / LOCK_NAME).exists()


def _write_lock(out, **record):
    out.mkdir(parents=True, exist_ok=True)
    base = {"pid": 1, "host": socket.gethostname(), "started": time.time(), "command": "other run"}
    base.update(record)
    (out / LOCK_NAME).write_text(json.dumps(base))


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc for process start times")
def test_a_reused_pid_is_stale(tmp_path):
    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A live pid whose process started at another time than the lock's owner: the owner is gone.
        _write_lock(out, pid=sleeper.pid, process_start_ticks=1)
        OutputDirLock(str(out)).acquire().release()
        # The same pid with its real start time is a live owner.
        from diffusion_rl.output_lock import _process_start_ticks

        _write_lock(out, pid=sleeper.pid, process_start_ticks=_process_start_ticks(sleeper.pid))
        with pytest.raises(OutputDirLockedError):
            OutputDirLock(str(out)).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lock_from_another_host_is_refused_with_the_way_out(tmp_path):
    out = tmp_path / "out"
    _write_lock(out, host="some-other-node", pid=123)
    with pytest.raises(OutputDirLockedError, match=r"(?s)pid 123 on some-other-node.*delete .*\.diffusion_rl\.lock"):
        OutputDirLock(str(out)).acquire()


def test_an_unreadable_lock_is_stale(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text('{"pid": ')  # its writer died mid-write
    OutputDirLock(str(out)).acquire().release()


def test_the_same_process_may_take_it_again_and_only_process_zero_locks(tmp_path):
    out = tmp_path / "out"
    first = OutputDirLock(str(out)).acquire()
    second = OutputDirLock(str(out)).acquire()  # e.g. a notebook cell rebuilding the trainer
    assert first.held and second.held
    second.release()
    assert not (out / LOCK_NAME).exists()

    class Args:
        output_dir = str(tmp_path / "other")
        process_index = 1

    assert acquire_output_dir_lock(Args()) is None and not (tmp_path / "other" / LOCK_NAME).exists()
    Args.process_index = 0
    lock = acquire_output_dir_lock(Args())
    assert (tmp_path / "other" / LOCK_NAME).exists()
    lock.release()
