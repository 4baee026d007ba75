"""Start-up: self-protection, the ``startup`` event (what runs, with which
levels and rules), the self-test, the policy findings."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from ..act import selfprotect
from .base import DaemonParts

if TYPE_CHECKING:  # annotations only
    from ..settings.schema import Settings


class Startup(DaemonParts):
    """One part of the Daemon (daemon/core.py), as the module docstring says."""

    def startup(self) -> None:
        adj = selfprotect.set_oom_score_adj(self.procfs)
        mlock = selfprotect.lock_memory()
        for what, result in (("oom_score_adj", adj), ("mlockall", mlock)):
            if result != "ok":
                self.emit("warning", "self_protect_failed", what=what, result=result)
        th, s = self.thresholds, self.settings
        self.emit("info", "startup", pid=os.getpid(), dry_run=s.dry_run, reader=self.sampler.backend,
            mem_total_kib=self.last_sample.mem_total_kib, swap_total_kib=self.last_sample.swap_total_kib,
            mem_term=str(s.memory.term), mem_kill=str(s.memory.kill), mem_warn=str(s.memory.warn),
            swap_term=str(s.swap.term), swap_kill=str(s.swap.kill),
            mem_term_kib=th.mem_term_kib, mem_kill_kib=th.mem_kill_kib, mem_warn_kib=th.mem_warn_kib,
            swap_term_kib=th.swap_term_kib, swap_kill_kib=th.swap_kill_kib,
            min_interval_s=s.sampling.min_interval, max_interval_s=s.sampling.max_interval,
            min_rate_mib_s=s.sampling.min_rate_mib_s, grace_s=s.kill.grace,
            psi=self.last_sample.psi is not None, oom_score_adj=adj, mlockall=mlock,
            wakeup=self.waiter.mode if self.waiter is not None else "sampling only",
            psi_rule=_psi_desc(s), zram=self.zram.active,
            swap_relief=_relief_desc(s), thrash=_thrash_desc(s), kernel_log=self.kernel_log_state,
            cgroup_choice=f"{s.cgroup_choice.by} below {s.cgroup_choice.root}" if s.cgroup_choice.enabled else "off",
            growth=(f"weight {s.growth.weight:g} over {s.growth.window:g}s, following between warn and term"
                    if s.growth.enabled else "off"),
            self_test=self.self_test(), **self._policy_fields(),
        )
        self._warn_raised()
        self._policy_findings()

    def _warn_raised(self) -> None:
        """A WARN level configured at or below TERM was raised above it
        (settings.amounts.warn_level_kib): say so, with both levels."""
        th = self.thresholds
        if th.mem_warn_asked_kib is not None:
            self.emit("warning", "warn_level_raised", mem_warn=str(self.settings.memory.warn),
                      mem_warn_asked_kib=th.mem_warn_asked_kib, mem_term_kib=th.mem_term_kib,
                      mem_warn_kib=th.mem_warn_kib,
                      message=(f"memory.warn ({th.mem_warn_asked_kib} KiB) is at or below memory.term "
                               f"({th.mem_term_kib} KiB): WARN raised to {th.mem_warn_kib} KiB, so growth "
                               f"following and the PSI gate have room"))

    def self_test(self) -> str:
        """Signal 0 to the top candidate: proves /proc and kill permissions."""
        table = self.scan(top_n=1)
        if not table:
            return "no candidate to test"
        top = table[0].proc
        opened = self.killer.open_verified(top.pid, top.start_time)
        if isinstance(opened, str):
            return f"pid {top.pid}: {opened}"
        try:
            signal.pidfd_send_signal(opened, 0)
            return f"ok (pid {top.pid} {top.comm})"
        except OSError as e:
            return f"cannot signal pid {top.pid}: {os.strerror(e.errno or 0)}"
        finally:
            os.close(opened)


def _psi_desc(s: Settings) -> str:
    p = s.psi
    if not p.enabled:
        return "off"
    kill = f", kill > {p.kill:g}%" if p.kill is not None else ""
    return (f"{p.line} {p.avg} > {p.term:g}%{kill} for {p.duration:g}s while MemAvailable <= warn, "
            f"{p.post_action_delay:g}s after an action")


def _relief_desc(s: Settings) -> str:
    r = getattr(s, "swap_relief", None)
    if r is None or not r.enabled:
        return "off"
    return (f"at a memory level, act unless swap keeps up: MemAvailable not reaching the floor within "
            f"{r.horizon:g}s and full stall < {r.stall:g}% over {r.window:g}s")


def _thrash_desc(s: Settings) -> str:
    t = getattr(s, "thrash", None)
    if t is None or not t.enabled:
        return "off"
    return (f"full stall >= {t.stall:g}% over {t.window:g}s with swap-in >= {t.min_swapin_mib_s:g} MiB/s "
            f"or refaults >= {t.min_refault_mib_s:g} MiB/s, while MemAvailable <= warn: "
            f"term after {t.duration:g}s, kill after {2 * t.duration:g}s")

