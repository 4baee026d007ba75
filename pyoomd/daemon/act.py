"""The act stage: choose (cgroup, user, victim), run the victim's soft action
or kill it (alone or with its cgroup), and wait for its memory."""

from __future__ import annotations

from ..act.kill import KillPlan
from ..judge import fairshare
from ..judge.cgroupchoice import choose_leaf
from ..model import Candidate, KillOutcome, Level
from ..sense import snapshot
from ..sense.cgroup import CgroupRef, LeafStat
from .base import DaemonParts


class Act(DaemonParts):
    """One part of the Daemon (daemon/core.py), as the module docstring says."""

    def _choose_cgroup(self) -> set[int] | None:
        """Cgroup-aware choice: the members of the worst leaf below the root,
        or None (choose among all processes) when disabled or none is found."""
        cfg = self.settings.cgroup_choice
        if not cfg.enabled:
            return None
        stats = [LeafStat.read(self.cgroups, cg, self.procfs) for cg in self.cgroups.leaves(cfg.root)]
        leaf = choose_leaf(stats, cfg.by)
        if leaf is None:
            self.emit("warning", "cgroup_choice_empty", root=cfg.root, by=cfg.by)
            return None
        self.emit("info", "cgroup_chosen", cgroup=leaf.cgroup.path, by=cfg.by, pressure=leaf.pressure,
                  memory_kib=leaf.memory_kib, preference=leaf.preference, leaves=len(stats))
        return set(leaf.pids)

    def _scan_choice(self, top_n: int, only: set[int] | None) -> list[Candidate]:
        """scan(), or with choice.by_user the scan of the user furthest above
        an equal share of memory (the next user when that one has no
        candidate), in fair-share order (judge/fairshare.py)."""
        if not self.settings.choice.by_user:
            return self.scan(top_n, only)
        rows = [r for r in snapshot.memory_by_pid(self.procfs, snapshot.default_skip(self.procfs))
                if only is None or r[0] in only]
        shares = fairshare.user_shares((uid, kib) for _, uid, kib in rows)
        for u in shares:
            cands = self.scan(top_n, {pid for pid, uid, _ in rows if uid == u.uid})
            if cands:
                self.emit("info", "user_chosen", uid=u.uid, kib=u.kib, share_kib=u.share_kib,
                          processes=u.processes, users=[[s.uid, s.kib] for s in shares])
                return fairshare.fair_order(cands, shares)
        return self.scan(top_n, only)

    def _act(self, level: Level, reason: str) -> float:
        # The top report_top by final badness (+ the stuck ones filtered out
        # after the scan), so the kill event's table is the real runner-up
        # list.  Ties below the first place stop the scan (snapshot.scan):
        # most idle processes share oom_score 666 + adj on >= 5.9 kernels,
        # and reading every one tied with the N-th took 0.7 s at 2,000.
        top = max(1, self.settings.report_top)
        cands = self._scan_choice(top_n=top + len(self.state.stuck), only=self._choose_cgroup())
        if not cands:
            self.emit("error", "no_candidate", oom_level=level.name, reason=reason)
            return self.settings.sampling.max_interval
        victim = cands[0]
        if victim.action and victim.proc.identity not in self.state.episode.soft_done:
            self.state.episode.soft_done.add(victim.proc.identity)
            grace = victim.grace_s if victim.grace_s is not None else self.settings.kill.grace
            if self._soft_action(victim, level, reason, grace):
                return self.settings.sampling.min_interval
        plan = KillPlan(self.settings.kill.grace, self.settings.kill.kill_timeout, self.settings.dry_run)

        def on_first(sig: str, level_now: Level) -> None:
            self.state.episode.kills += 1
            self.judge.note_action(self.clock())  # PSI post-action delay starts
            self._log_kill(victim, sig, level_now, cands, reason)

        group = self._group_of(victim)
        if group is not None:
            outcome = self.group_killer.kill(victim, group[0], group[1], plan, on_first)
        else:
            outcome = self.killer.kill(victim, plan, on_first)
        return self._after(victim, outcome, plan)

    def _group_of(self, victim: Candidate) -> tuple[CgroupRef, str] | None:
        """(cgroup, why) when the victim's whole cgroup must go, else None."""
        cg = self.cgroups.ref(victim.proc.cgroup)
        if cg is None:
            return None
        cfg = self.settings.cgroups
        if victim.kill_cgroup:
            why = "policy kill: cgroup"
        elif any(cg.path == p or cg.path.startswith(p + "/") for p in cfg.kill_whole):
            why = "cgroups.kill_whole"
        elif cfg.oom_group and self.cgroups.oom_group(cg):
            why = "memory.oom.group=1"
        else:
            return None
        refused = self.group_killer.refuse(cg)
        if refused is not None:
            self.emit("warning", "group_kill_refused", pid=victim.proc.pid, cgroup=cg.path, why=why, reason=refused)
            return None
        return cg, why

    def _after(self, victim: Candidate, outcome: KillOutcome, plan: KillPlan) -> float:
        if outcome.skipped:
            self.emit("info", "kill_skipped", pid=victim.proc.pid, comm=victim.proc.comm, reason=outcome.skipped)
            return self.settings.sampling.min_interval
        if outcome.dry_run:
            return plan.grace_s  # as if we had waited for the victim
        if outcome.exited:
            self.emit("info", "victim_exited", pid=victim.proc.pid, comm=victim.proc.comm,
                          ms=outcome.ms_to_exit, signals=list(outcome.signals))
            self.judge.forget_rates()
            s = self.last_sample
            self.state.release = (self.clock() + self.settings.kill.release_timeout,
                                  s.mem_available_kib + s.swap_free_kib, self._expected_back(victim))
            return self.settings.kill.settle
        self.state.stuck[victim.proc.identity] = self.clock()
        self.emit("error", "victim_stuck", pid=victim.proc.pid, comm=victim.proc.comm,
                       signals=list(outcome.signals), timeout_s=plan.kill_timeout_s)
        return self.settings.sampling.min_interval

