"""How the scripts that the distributed tests launch (`accelerate launch` / `torchrun`, gloo) end their processes.

A process whose run succeeded could still abort at interpreter shutdown ("terminate called without an active
exception", SIGABRT, exit code -6; seen twice in CI on tests/multinode_train.py, the second time after an explicit
`destroy_process_group()`). The gloo group outlives the run: a `DistributedDataParallel` wrapper, even of one
`nn.Linear`, keeps it alive from C++ after the wrapper, its trainer and the registry's references are gone (measured:
a weakref to the group is still live after `del`, `gc.collect()` and `destroy_process_group()`), so it is torn down
only while the interpreter finalizes, where its threads can abort. These scripts write all their results to disk;
once every process has written them, each one runs its `atexit` handlers (the output-folder lock is released there)
and leaves without the interpreter's finalization.
"""

import atexit
import os
import sys


def exit_after_all_processes_finished(accelerator) -> None:
    """Wait for every process, run the `atexit` handlers, flush the output and leave with exit code 0."""
    accelerator.wait_for_everyone()  # no process leaves while another still needs the group
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
