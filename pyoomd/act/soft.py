"""Soft actions: what a policy rule may do first, instead of SIGTERM.

``action: {run: [argv...]}`` runs a program (an argv list, never a shell,
never a PATH search) with the victim described in its environment exactly
as hooks get it (``PYOOMD_PID``, ``PYOOMD_COMM``, ... and
``PYOOMD_ACTION=run``; see act/hooks.py).  It runs as the victim's own user
(its primary group, no supplementary groups; no_new_privs is inherited): it
can do to the victim what the victim's owner could (signal it, talk to it
over a socket it owns) and no more.  A program still running after
``soft_actions.timeout`` is SIGKILLed with its process group.

``action: restart-unit`` restarts the systemd unit the victim belongs to
(the innermost ``*.service`` of its cgroup path, below no ``user@UID.service``:
a unit of a user's own systemd instance is not the system manager's to
restart) through the system manager's D-Bus method
``org.freedesktop.systemd1.Manager.RestartUnit(name, "replace")`` (systemd's
``systemctl restart``; oomd's ``systemd_restart`` plugin does the same).

Either way the daemon then waits the usual grace for memory to recover
(``daemon._soft_action``); if it did not, the kill follows.  Nothing here
blocks longer than its timeout.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import re
import threading
from collections.abc import Mapping
from typing import Any

from .hooks import drop_inheritable_privileges, hook_env

SYSTEMD_NAME = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
SYSTEMD_MANAGER = "org.freedesktop.systemd1.Manager"
# systemd's unit name rules (unit_name_is_valid): these characters, at most 255.
_UNIT = re.compile(r"^[A-Za-z0-9:_.\\@-]{1,246}\.service$")
CALL_TIMEOUT_S = 2.0


def unit_of_cgroup(path: str | None) -> tuple[str | None, str]:
    """(unit, why) for a cgroup path as /proc/PID/cgroup shows it: the
    innermost ``*.service`` component above any ``user@*.service`` (whose
    subtree belongs to that user's manager), or (None, why not)."""
    if not path or not path.startswith("/"):
        return None, "cgroup unknown"
    unit = None
    for part in path.strip("/").split("/"):
        if fnmatch.fnmatchcase(part, "user@*.service"):
            return None, f"in {part}: a unit of that user's own systemd instance"
        if part.endswith(".service"):
            unit = part
    if unit is None:
        return None, f"not in a systemd service ({path})"
    if not _UNIT.match(unit):
        return None, f"not a valid unit name: {unit!r}"
    return unit, f"cgroup {path}"


def restart_unit(address: str, unit: str, timeout: float = CALL_TIMEOUT_S) -> str:
    """Manager.RestartUnit(unit, "replace") over the bus at ``address``: the
    job's object path.  Raises OSError with the bus's error on failure."""
    from jeepney import DBusAddress, DBusErrorResponse, new_method_call
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.wrappers import unwrap_msg

    manager = DBusAddress(SYSTEMD_PATH, bus_name=SYSTEMD_NAME, interface=SYSTEMD_MANAGER)
    try:
        with open_dbus_connection(address, auth_timeout=timeout) as conn:
            reply = conn.send_and_get_reply(new_method_call(manager, "RestartUnit", "ss", (unit, "replace")),
                                            timeout=timeout)
        return str(unwrap_msg(reply)[0])
    except DBusErrorResponse as e:
        raise OSError(f"{e.name}: {' '.join(map(str, e.data))}") from None
    except TimeoutError:
        raise OSError(f"no answer from {address} in {timeout:g}s") from None


def action_env(fields: Mapping[str, Any]) -> dict[str, str]:
    """The hooks' environment for the victim, plus PYOOMD_ACTION."""
    env = hook_env(fields)
    env["PYOOMD_ACTION"] = "run"
    return env


def _user_of(uid: int) -> tuple[int | None, int | None]:
    """(uid, gid) to run as: the victim's (as root), else None, None (ourselves)."""
    if os.geteuid() != 0:
        return None, None
    try:
        return uid, pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid, uid  # no passwd entry (DynamicUser): the same-numbered group


class Running:
    """A started ``run`` action: its process and its return code once done."""

    def __init__(self, proc: Any, timeout: float) -> None:
        self.proc = proc
        self.timed_out = False
        self._reaper = threading.Thread(target=self._reap, args=(timeout,), name="pyoomd-soft-reap",
                                        daemon=True)
        self._reaper.start()

    def returncode(self) -> int | None:
        rc = self.proc.poll()
        return None if rc is None else int(rc)

    def _reap(self, timeout: float) -> None:
        import subprocess

        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                self.proc.kill()
            self.proc.wait()


def run_action(argv: tuple[str, ...], fields: Mapping[str, Any], timeout: float) -> Running:
    """Start ``argv`` as the victim's user with its environment; OSError if
    it cannot start."""
    import subprocess

    drop_inheritable_privileges()  # no_new_privs: a setuid program cannot regain what setuid() dropped
    uid, gid = _user_of(int(fields.get("uid") or 0))
    p = subprocess.Popen(list(argv), env=action_env(fields), stdin=subprocess.DEVNULL, close_fds=True, cwd="/",
                         user=uid, group=gid, extra_groups=[] if uid is not None else None,
                         start_new_session=True)
    return Running(p, timeout)
