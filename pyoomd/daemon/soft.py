"""A policy's soft action (act/soft.py: run a program, restart a unit), then
the grace for memory to come back before a kill."""

from __future__ import annotations

import os
import time
from typing import Any

from ..model import Candidate, Level
from ..settings.trust import program_problem
from .base import DaemonParts


class Soft(DaemonParts):
    """One part of the Daemon (daemon/core.py), as the module docstring says."""

    def _soft_action(self, victim: Candidate, level: Level, reason: str, grace_s: float) -> bool:
        """The victim's soft action (a policy's ``action``: act/soft.py), then
        the grace for memory to come back above TERM.  True when it did (no
        kill); False when the kill must follow: the action failed, the grace
        ended below TERM, or the KILL level was reached.  One event,
        ``soft_action``, with the outcome."""
        from ..act import soft
        from ..act.escalate import WAIT_STEP_S
        from ..act.escalate import wait_readable as _wait_readable

        p, action = victim.proc, victim.action
        assert action is not None
        base: dict[str, Any] = {"pid": p.pid, "comm": p.comm, "uid": p.uid, "cgroup": p.cgroup,
                                "rule": victim.action_rule, "action": action[0], "oom_level": level.name,
                                "reason": reason, "dry_run": self.settings.dry_run}
        if action[0] == "run":
            base["argv"] = list(action[1:])
        if self.settings.dry_run:
            self.emit("warning", "soft_action", outcome="dry_run", **base)
            return False
        opened = self.killer.open_verified(p.pid, p.start_time)
        if isinstance(opened, str):
            self.emit("info", "soft_action", outcome="skipped", error=opened, **base)
            return False
        cfg = getattr(self.settings, "soft_actions", None)  # absent from plans of older versions
        timeout = cfg.timeout if cfg is not None else 10.0
        t0 = self.clock()
        running = None
        try:
            if action[0] == "run":
                problem, fatal = program_problem(action[1])
                if fatal:
                    raise OSError(problem)
                fields = {"pid": p.pid, "comm": p.comm, "cmdline": p.cmdline, "uid": p.uid,
                          "rss_kib": p.rss_kib, "signal": "", "reason": reason, "dry_run": False}
                running = soft.run_action(action[1:], fields, timeout)
            else:
                unit, why = soft.unit_of_cgroup(p.cgroup)
                if unit is None:
                    raise OSError(f"no unit to restart: {why}")
                base["unit"] = unit
                bus = cfg.system_bus if cfg is not None else "unix:path=/run/dbus/system_bus_socket"
                base["job"] = soft.restart_unit(bus, unit)
        except (OSError, ValueError) as e:  # jeepney raises ValueError for a bad address
            os.close(opened)
            self.emit("error", "soft_action", outcome="failed", error=str(e), **base)
            return False
        self.judge.note_action(self.clock())  # PSI post-action delay starts
        deadline, exited, outcome = t0 + grace_s, False, "not recovered"
        try:
            while True:
                lv = self._resample_level()
                if lv < Level.TERM:
                    outcome = "recovered"
                    break
                if lv >= Level.KILL:
                    outcome = "KILL level reached"
                    break
                now = self.clock()
                if now >= deadline:
                    break
                if exited:
                    time.sleep(min(WAIT_STEP_S, deadline - now))
                else:
                    exited = _wait_readable(opened, min(WAIT_STEP_S, deadline - now))
        finally:
            os.close(opened)
        if running is not None:
            base["returncode"] = running.returncode()
        sev = "info" if outcome == "recovered" else "warning"
        self.emit(sev, "soft_action", outcome=outcome, ms=round((self.clock() - t0) * 1000, 1),
                  victim_exited=exited, grace_s=grace_s, mem_available_kib=self.last_sample.mem_available_kib,
                  **base)
        return outcome == "recovered"

