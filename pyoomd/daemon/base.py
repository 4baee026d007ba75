"""What the daemon's parts share: the loop's state, and ``DaemonParts``,
the attributes and methods each part (daemon/tick.py, act.py, ...) may use
of the others.  The Daemon (daemon/core.py) is all of them, wired."""

from __future__ import annotations

import collections
import threading
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..act.cgroup_kill import GroupKiller
from ..act.kill import Guard, Killer, KillPlan
from ..judge.choose import Scoring
from ..judge.decide import Judge
from ..judge.growth import Attribution, GrowthTracker
from ..judge.rank import Policy
from ..model import Candidate, Decision, KillOutcome, Level, MemSample, ProcInfo
from ..sense import snapshot
from ..sense.cgroup import CgroupRef, Cgroups
from ..sense.facts import FreesReader
from ..sense.kmsg import KmsgFollower
from ..sense.procfs import Procfs
from ..sense.psi import Waiter
from ..sense.sample import IdleParams, IdleResult, Sampler
from ..sense.vmstat import Vmstat
from ..sense.zram import Zram
from ..settings.amounts import Thresholds

if TYPE_CHECKING:  # annotations only
    from ..policy.rules import Loaded
    from ..settings.schema import Settings


class Observer(Protocol):
    """A report-stage consumer (see Daemon.observers)."""

    def on_event(self, event: str, fields: dict[str, Any]) -> None: ...

    def on_tick(self, sample: MemSample, decision: Decision) -> None: ...


@dataclass
class Episode:
    """A pressure episode: from the first TERM level until memory is OK again."""

    kills: int = 0
    active: bool = False
    # Victims (pid, start time) whose soft action ran: one per victim per episode.
    soft_done: set[tuple[int, int]] = field(default_factory=set)


@dataclass
class State:
    level: Level = Level.OK
    episode: Episode = field(default_factory=Episode)
    stuck: dict[tuple[int, int], float] = field(default_factory=dict)
    last_error_at: float = -1e9
    stop: bool = False
    reload: bool = False
    # After a victim exited: (deadline, MemAvailable + SwapFree then, KiB
    # expected back: its frees_kib, or half its RSS + swap when unknown).
    release: tuple[float, int, int] | None = None
    # The victim being acted on: (identity, frees_kib or None), from _log_kill.
    frees: tuple[tuple[int, int], int | None] | None = None


class DaemonParts:
    """The daemon as its parts see it: each part (a mixin of Daemon) uses
    these attributes, which Daemon.__init__ sets, and these methods, which
    the other parts implement (declared for the type checker only)."""

    settings: Settings
    procfs: Procfs
    sampler: Sampler
    log: Any
    policy: Policy
    clock: Callable[[], float]
    waiter: Waiter | None
    sleep: Callable[[float], None]
    zram: Zram
    vmstat: Vmstat
    thresholds: Thresholds
    levels_totals: tuple[int, int]
    judge: Judge
    cgroups: Cgroups
    guard: Guard
    killer: Killer
    group_killer: GroupKiller
    state: State
    last_sample: MemSample
    growth: GrowthTracker
    _followed: bool
    _follow_scores: dict[int, int]
    _follow_rise: dict[int, int]
    _follow_last_pid: int | None
    _followed_at: float
    observers: list[Observer]
    pre_kill: list[Callable[[dict[str, Any]], None]]
    last_tick_s: float | None
    reloader: Callable[[], Settings] | None
    policy_loader: Callable[[Settings], Loaded] | None
    policy_loaded: Loaded | None
    _reload_job: tuple[threading.Thread, dict[str, Any]] | None
    _wake_pipe: tuple[int, int] | None
    kmsg: KmsgFollower | None
    kernel_log_state: str
    kernel_reports: collections.deque[tuple[str, str, dict[str, Any]]]
    frees: FreesReader
    use_idle_wait: bool | None

    if TYPE_CHECKING:
        @abstractmethod
        def startup(self) -> None: ...
        @abstractmethod
        def _warn_raised(self) -> None: ...
        @abstractmethod
        def self_test(self) -> str: ...
        @abstractmethod
        def start_kernel_log(self) -> None: ...
        @abstractmethod
        def stop_kernel_log(self) -> None: ...
        @abstractmethod
        def _kernel_report(self, severity: str, event: str, fields: dict[str, Any]) -> None: ...
        @abstractmethod
        def report_kernel(self) -> None: ...
        @abstractmethod
        def _can_idle(self) -> bool: ...
        @abstractmethod
        def idle_gate_kib(self) -> int: ...
        @abstractmethod
        def idle_timeout_s(self) -> float: ...
        @abstractmethod
        def _idle(self, idle_wait: Callable[[IdleParams], IdleResult], pause: float, wake_fd: int | None) -> IdleResult | None: ...
        @staticmethod
        @abstractmethod
        def _pinger_spec(obs: object) -> tuple[int, float, float] | None: ...
        @abstractmethod
        def _signal_wakeup(self) -> int | None: ...
        @abstractmethod
        def wake(self) -> None: ...
        @abstractmethod
        def _signal_wakeup_off(self) -> None: ...
        @abstractmethod
        def reload(self) -> None: ...
        @abstractmethod
        def _start_reload(self) -> bool: ...
        @abstractmethod
        def _finish_reload(self) -> None: ...
        @abstractmethod
        def tick(self, sample: MemSample | None=None, before: tuple[float, int] | None=None) -> float: ...
        @abstractmethod
        def _check_totals(self, sample: MemSample) -> None: ...
        @abstractmethod
        def _releasing(self, sample: MemSample, now: float) -> bool: ...
        @abstractmethod
        def _track_level(self, level: Level, reason: str, sample: MemSample) -> None: ...
        @abstractmethod
        def _follow_growth(self, level: Level, now: float, sample: MemSample, before: tuple[float, int] | None=None) -> None: ...
        @abstractmethod
        def _prefetch_frees(self) -> None: ...
        @abstractmethod
        def attribution(self) -> Attribution: ...
        @abstractmethod
        def scoring(self) -> Scoring: ...
        @abstractmethod
        def warm(self) -> snapshot.Warm | None: ...
        @abstractmethod
        def _spare_now(self, proc: ProcInfo) -> str | None: ...
        @abstractmethod
        def scan(self, top_n: int, only: set[int] | None=None) -> list[Candidate]: ...
        @abstractmethod
        def _choose_cgroup(self) -> set[int] | None: ...
        @abstractmethod
        def _scan_choice(self, top_n: int, only: set[int] | None) -> list[Candidate]: ...
        @abstractmethod
        def _act(self, level: Level, reason: str) -> float: ...
        @abstractmethod
        def _soft_action(self, victim: Candidate, level: Level, reason: str, grace_s: float) -> bool: ...
        @abstractmethod
        def _group_of(self, victim: Candidate) -> tuple[CgroupRef, str] | None: ...
        @abstractmethod
        def _after(self, victim: Candidate, outcome: KillOutcome, plan: KillPlan) -> float: ...
        @abstractmethod
        def _expected_back(self, victim: Candidate) -> int: ...
        @abstractmethod
        def _frees_fields(self, p: ProcInfo) -> dict[str, Any]: ...
        @abstractmethod
        def _log_kill(self, victim: Candidate, sig: str, level: Level, cands: list[Candidate], reason: str) -> None: ...
        @abstractmethod
        def _resample_level(self) -> Level: ...
        @abstractmethod
        def _killer_event(self, event: str, **kw: object) -> None: ...
        @abstractmethod
        def emit(self, severity: str, event: str, **fields: Any) -> None: ...
        @abstractmethod
        def use_policies(self, loaded: Loaded) -> None: ...
        @abstractmethod
        def _policy_fields(self) -> dict[str, Any]: ...
        @abstractmethod
        def _policy_findings(self) -> None: ...
        @abstractmethod
        def _install_signals(self) -> None: ...
