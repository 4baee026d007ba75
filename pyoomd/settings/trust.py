"""Whether root may trust a file it reads (a config, a policy) or a
program it runs (a hook, a soft action): the care sudo takes with sudoers.

Light (stdlib only): the running loop imports this module.
"""

from __future__ import annotations

import os
import stat


def trust_problem(st: os.stat_result, euid: int) -> str | None:
    """Why root must not trust a config or policy file (or directory), or
    None: the care sudo takes with sudoers.  Only regular files and
    directories are judged (``--config /dev/null`` is fine)."""
    if euid != 0 or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return None
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root: that user could change what root enforces"
    if st.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod go-w"
    return None


def program_problem(path: str, euid: int | None = None) -> tuple[str | None, bool]:
    """(why a soft action's program cannot run, fatal): as root, one that
    another user owns or can write (or its directory, unless sticky) is
    refused (fatal); a missing or non-executable one only fails when run."""
    euid = os.geteuid() if euid is None else euid
    try:
        st, dst = os.stat(path), os.stat(os.path.dirname(path) or "/")
    except OSError as e:
        return f"action program {path!r}: {e.strerror}: the action will fail and the kill follow", False
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
        return f"action program {path!r} is not an executable file: the action will fail", False
    problem = trust_problem(st, euid)
    if problem is None and not dst.st_mode & stat.S_ISVTX:
        problem = trust_problem(dst, euid)
    return (f"action program {path!r} refused: {problem}", True) if problem else (None, False)
