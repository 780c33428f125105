"""One run per output folder: a lock file that a second run sharing the `output_dir` fails fast on.

Two runs writing into one `output_dir` overwrite each other's checkpoints and reports and both exit 0 (measured:
`checkpoint-1` from run A, the rest and the report from run B). The main process of a run therefore creates
`output_dir/.diffusion_rl.lock` with `O_CREAT | O_EXCL` (atomic, also on NFS v3+), holding the owner's pid, host,
start time and command line. A second run finds it and raises [`OutputDirLockedError`] naming the first run.

A lock whose owner is gone is *stale* and taken over with a warning: on the same host when the pid no longer exists
(or was reused by a process that started after the lock was written); a lock from another host cannot be probed,
so it is reported and the message says how to remove it by hand. Within one process, re-taking the lock is allowed
(a notebook cell that rebuilds the trainer, a resume test): the lock belongs to the process, not to one trainer.

The lock is released by [`OutputDirLock.release`] (the trainer calls it when its process ends: `atexit`, and before
a SIGTERM is re-delivered, since the default SIGTERM action skips `atexit`). A process killed with SIGKILL leaves
the file behind; the next run sees a dead pid and takes the lock over.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import threading
import time

from transformers.utils import logging

__all__ = ["LOCK_NAME", "OutputDirLock", "OutputDirLockedError", "acquire_output_dir_lock"]

logger = logging.get_logger(__name__)

LOCK_NAME = ".diffusion_rl.lock"
_held: dict[str, OutputDirLock] = {}  # realpath of the lock file -> the lock this process holds
_guard = threading.Lock()


class OutputDirLockedError(RuntimeError):
    """Another live run holds the lock on this `output_dir`."""


def _process_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux `/proc/<pid>/stat` field 22), `None` elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            # The command name (field 2) may contain spaces and parentheses: split after its closing ')'.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def _describe(owner: dict) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, int | float) else "?"
    command = owner.get("command") or "?"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {when}, command: {command}"


class OutputDirLock:
    """The lock file of one output folder, held by this process.

    Args:
        output_dir (`str`):
            The run's output folder (created if needed).
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self.held = False

    def _owner_record(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "process_start_ticks": _process_start_ticks(os.getpid()),
            "command": " ".join(sys.argv)[:500],
        }

    def _read_owner(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written or unreadable: its writer died mid-write or it is not ours

    def _is_stale(self, owner: dict) -> bool:
        if not owner:  # unreadable lock: written by a process that died before finishing the write
            return True
        if owner.get("host") != socket.gethostname():
            return False  # cannot probe a process on another machine
        pid = owner.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            return True
        recorded, current = owner.get("process_start_ticks"), _process_start_ticks(pid)
        # The pid exists but belongs to a process started after the owner (pid reuse): the owner is gone.
        return recorded is not None and current is not None and recorded != current

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._owner_record(), f)
        return True

    def acquire(self) -> OutputDirLock:
        """Take the lock, or raise [`OutputDirLockedError`] naming the run that holds it.

        A stale lock (its process is gone) is replaced, with a warning. Taking the lock again from the process that
        holds it is a no-op.
        """
        os.makedirs(self.output_dir, exist_ok=True)
        key = os.path.realpath(self.path)
        with _guard:
            if key in _held:
                self.held = True
                return self
            for _ in range(3):  # a concurrent run may take over the same stale lock: retry the exclusive create
                if self._create():
                    break
                owner = self._read_owner()
                if owner is None:
                    continue  # released between our create and our read
                if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                    break  # ours (e.g. taken by a trainer of this process that was garbage-collected)
                if not self._is_stale(owner):
                    raise OutputDirLockedError(
                        f"output_dir {self.output_dir!r} is in use by another run ({_describe(owner)}). Two runs in "
                        "one folder overwrite each other's checkpoints and reports: use another --output_dir, or "
                        "wait for that run to end. If that run is gone (it ran on another machine, or the folder was "
                        f"copied), delete {self.path}."
                    )
                logger.warning(f"Taking over the stale lock {self.path} of a run that is gone ({_describe(owner)}).")
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
            else:
                raise OutputDirLockedError(f"could not take the lock {self.path}: it keeps being re-created.")
            _held[key] = self
            self.held = True
        return self

    def release(self) -> None:
        """Remove the lock file if this process holds it (idempotent)."""
        key = os.path.realpath(self.path)
        with _guard:
            if _held.pop(key, None) is None:
                self.held = False
                return
            owner = self._read_owner()
            if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
            self.held = False


def release_all() -> None:
    """Release every lock this process holds (at exit, and before a SIGTERM is re-delivered)."""
    for lock in list(_held.values()):
        lock.release()


atexit.register(release_all)


def acquire_output_dir_lock(args) -> OutputDirLock | None:
    """Lock `args.output_dir` on the main process of the run (`None` on the other processes).

    Args:
        args (`TrainingArguments`):
            The run's arguments; only `output_dir` and `process_index` are read.

    Raises:
        `OutputDirLockedError`: (a `RuntimeError`) another live run holds the lock; the message names it.
    """
    if getattr(args, "process_index", 0) != 0 or not getattr(args, "output_dir", None):
        return None
    return OutputDirLock(args.output_dir).acquire()
