"""The ``kill`` event (the victim, the runner-up table, what it frees), the
pre-kill step, and the kernel-style ``killed_process`` line."""

from __future__ import annotations

from typing import Any

from ..model import Candidate, Level, ProcInfo
from ..sense import snapshot
from .base import DaemonParts


class KillReport(DaemonParts):
    """One part of the Daemon (daemon/core.py), as the module docstring says."""

    def _expected_back(self, victim: Candidate) -> int:
        """KiB the victim's death gives back: its frees_kib (USS + swap, as
        the kill event said), or half its RSS + swap when that was not read
        (shared pages do not come back; half was the guess before psutil)."""
        p = victim.proc
        known = self.state.frees
        if known is not None and known[0] == p.identity and known[1] is not None:
            return known[1]
        return (p.rss_kib + p.swap_kib) // 2

    def _frees_fields(self, p: ProcInfo) -> dict[str, Any]:
        """``frees_kib`` and how it was read, for the kill event: from the
        read made during the approach (FreesReader) if it was this process,
        grown by what its RSS + swap grew since; else None (never read here:
        smaps_rollup walks the page tables, tens of ms, not before the signal)."""
        r = self.frees.reading(p.identity)
        frees = r.frees_now(p.rss_kib, p.swap_kib) if r is not None else None
        self.state.frees = (p.identity, frees)
        if r is None or frees is None:
            return {"frees_kib": None, "frees": None}
        f = r.facts
        return {"frees_kib": frees,
                "frees": {"uss_kib": f.uss_kib, "pss_kib": f.pss_kib, "swap_kib": f.swap_kib,
                          "rss_kib": f.rss_kib, "read_s_ago": round(self.clock() - r.at, 3), "read_ms": r.ms}}

    def _log_kill(self, victim: Candidate, sig: str, level: Level, cands: list[Candidate], reason: str) -> None:
        p = victim.proc
        dry = self.settings.dry_run
        top = [_cand_row(c) for c in cands[: self.settings.report_top]]
        fields: dict[str, Any] = dict(pid=p.pid, comm=p.comm, cmdline=p.cmdline, uid=p.uid, exe=p.exe, cgroup=p.cgroup,
            signal=sig, dry_run=dry, oom_level=level.name, oom_score=p.oom_score,
            oom_score_adj=p.oom_score_adj, badness=victim.badness, rules=list(victim.rules),
            kill_group=victim.kill_group, pgid=p.pgid,
            rss_kib=p.rss_kib, swap_kib=p.swap_kib, **self._frees_fields(p), reason=reason,
            why=" ".join(victim.reasons), episode_kills=self.state.episode.kills, candidates=top,
            growth={"points": victim.growth_points, "grew_kib": victim.growth_kib,
                    "over_s": victim.growth_over_s, "share": victim.growth_share,
                    "rate_kib_s": victim.growth_rate_kib_s, "window_s": self.settings.growth.window,
                    "weight": self.settings.growth.weight, "enabled": self.settings.growth.enabled},
        )
        self.emit("warning", "kill", **fields)
        for step in self.pre_kill:
            step(dict(fields))
        mem = None if dry else snapshot.read_kernel_mem(self.procfs, p.pid)
        if mem is not None:
            vm, anon, file, shmem = mem  # the log's killed_process_line adds the kernel-style line
            self.emit("warning", "killed_process", pid=p.pid, comm=p.comm, uid=p.uid, total_vm_kib=vm,
                      anon_rss_kib=anon, file_rss_kib=file, shmem_rss_kib=shmem)


def _cand_row(c: Candidate) -> dict[str, object]:
    p = c.proc
    return {"pid": p.pid, "comm": p.comm, "badness": c.badness, "oom_score": p.oom_score,
            "oom_score_adj": p.oom_score_adj, "rss_kib": p.rss_kib, "rules": list(c.rules),
            "growth_points": c.growth_points, "growth_kib": c.growth_kib, "growth_share": c.growth_share,
            "growth_rate_kib_s": c.growth_rate_kib_s}

