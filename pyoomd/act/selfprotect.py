"""Make the killer itself unkillable and unswappable, where the machine lets us."""

from __future__ import annotations

import ctypes
import os

from ..sense.procfs import Procfs

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4  # <sys/mman.h>


def set_oom_score_adj(procfs: Procfs, value: int = -1000) -> str:
    """'ok' or why not.  Lowering needs CAP_SYS_RESOURCE, absent in some
    containers: then the kernel OOM killer might pick us, but we run on."""
    try:
        with open(procfs.pid_file(os.getpid(), "oom_score_adj"), "w") as f:
            f.write(str(value))
        return "ok"
    except OSError as e:
        return f"refused: {os.strerror(e.errno or 0)}"


def lock_memory() -> str:
    """mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT): 'ok' or why not.
    ONFAULT locks pages as they are touched instead of faulting in every
    mapping (the interpreter maps far more than it uses)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError as e:
        return f"unavailable: {e}"
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0:
        return "ok"
    return f"refused: {os.strerror(ctypes.get_errno())}"
