"""earlyoom's -p (``raise_priority``): the daemon's own CPU and I/O priority.

Part of the act stage's self-protection (act/selfprotect.py): applied once at
start-up, reported by the ``priority_raised`` event.
"""

from __future__ import annotations

import os

# earlyoom's -p: niceness -20 (its value); I/O class realtime, level 4 (the
# middle of 0..7), falling back to best-effort 0 where CAP_SYS_ADMIN is missing.
NICENESS = -20


def raise_priority() -> dict[str, str]:
    """earlyoom's -p: niceness -20 and a high I/O priority; what we got."""
    out = {}
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
        out["nice"] = str(NICENESS)
    except OSError as e:
        out["nice"] = f"refused: {e.strerror}"
    for cls, value, name in ((IOPRIO_CLASS_RT, 4, "realtime/4"), (IOPRIO_CLASS_BE, 0, "best-effort/0")):
        try:
            set_ioprio(cls, value)
            out["ionice"] = name
            break
        except OSError as e:
            out["ionice"] = f"refused: {e}"
    return out


# <linux/ioprio.h>; ioprio_set(2) has no wrapper in libc nor in os: the
# syscall by number (the loop does not import psutil, ~1 MiB, for this).
IOPRIO_CLASS_RT, IOPRIO_CLASS_BE, IOPRIO_WHO_PROCESS, IOPRIO_CLASS_SHIFT = 1, 2, 1, 13
_SYS_IOPRIO_SET = {"x86_64": 251, "i386": 289, "i686": 289, "aarch64": 30, "riscv64": 30, "loongarch64": 30,
                   "armv7l": 314, "armv6l": 314, "ppc64le": 273, "ppc64": 273, "s390x": 282}


def set_ioprio(cls: int, value: int) -> None:
    """ioprio_set(IOPRIO_WHO_PROCESS, self, class/value); OSError if refused."""
    import ctypes

    nr = _SYS_IOPRIO_SET.get(os.uname().machine)
    if nr is None:  # an architecture not in the table: psutil knows them all
        import psutil

        try:
            psutil.Process().ionice(cls, value)
        except psutil.Error as e:
            raise OSError(str(e)) from None
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(nr, IOPRIO_WHO_PROCESS, 0, (cls << IOPRIO_CLASS_SHIFT) | value) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
