"""The settings: one schema for the tests, the compile child and the
running loop.

Frozen, slotted stdlib dataclasses, light enough for the loop (it must not
import pydantic: see README, "Memory of the running daemon").  Pydantic
validates them in the compile child and the one-shot commands
(``pyoomd.settings.load``): each field's parsing and checks are
``Annotated`` markers below (Parse, Check, Bounds) whose pydantic_core
schema is built only then; each class's cross-field checks are in its
``__post_init__`` (ValueError), so they hold for a Settings built in code
too.  ``Settings.compile(mem_total, swap_total)`` turns percentages into KiB
once, giving the frozen ``Thresholds`` the judge uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from .amounts import Amount, Thresholds, compile_thresholds, parse_amount, parse_duration_s

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

DEFAULT_POLICY_DIR = "/etc/pyoomd/policies.d"


# -- field markers: what pydantic runs for a field (built only when validating) --------
class Parse:
    """Run ``fn`` on the raw value before the field's type is checked
    (``5s`` -> 5.0); ``fn`` raises ValueError naming the raw value."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(self.fn, handler(source))


class Check:
    """Run ``fn`` on the value once its type is checked; ``fn`` returns it
    or raises ValueError."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.fn, handler(source))


class Bounds:
    """Limits of an int or float field (pydantic's own messages: "Input
    should be greater than 0").  Put it before a Parse: the limits apply to
    the parsed value."""

    __slots__ = ("limits",)

    def __init__(self, *, gt: float | None = None, ge: float | None = None, le: float | None = None) -> None:
        self.limits = {k: v for k, v in (("gt", gt), ("ge", ge), ("le", le)) if v is not None}

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        if schema["type"] not in ("int", "float"):
            raise TypeError(f"Bounds applies to int and float fields, not {source!r}")
        return {**schema, **self.limits}


def _amount(v: Any) -> Amount:
    return v if isinstance(v, Amount) else parse_amount(v)


def _pct(v: Any) -> float:
    """``40%`` or ``40`` -> 40.0 (a PSI percentage, 0..100)."""
    if isinstance(v, bool):
        raise ValueError(f"expected a percentage, got {v!r}")
    text = str(v).strip().removesuffix("%")
    try:
        pct = float(text)
    except ValueError:
        raise ValueError(f"not a percentage: {v!r}") from None
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentage out of 0..100: {v!r}")
    return pct


def _pct_or_none(v: Any) -> float | None:
    return None if v is None else _pct(v)


# A threshold as written (10%, 2G, [10%, 1G]); a duration (5s, 250ms); a percentage (40%).
Threshold = Annotated[Amount, Parse(_amount)]
Duration = Annotated[float, Parse(parse_duration_s)]
Percent = Annotated[float, Parse(_pct)]


class _Strict:
    """Unknown keys are errors (pydantic reads ``__pydantic_config__``)."""

    __slots__ = ()
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}


@dataclass(frozen=True, slots=True)
class MemoryConfig(_Strict):
    """TERM, KILL and WARN levels for memory (MemAvailable)."""

    term: Threshold = Amount(pct=10.0)
    kill: Threshold = Amount(pct=5.0)
    # WARN: above TERM; where sampling tightens and growth tracking starts.
    warn: Threshold = Amount(pct=20.0)


@dataclass(frozen=True, slots=True)
class SwapConfig(_Strict):
    """TERM and KILL levels for swap (SwapFree)."""

    term: Threshold = Amount(pct=10.0)
    kill: Threshold = Amount(pct=5.0)


@dataclass(frozen=True, slots=True)
class SamplingConfig(_Strict):
    # 1 s at most between samples when memory is plentiful: earlyoom's ceiling,
    # one tick a second costs 0.03 % CPU idle (README, Benchmarks: ~280 us
    # for a tick after a second asleep, ~30 us warm).
    max_interval: Duration = 1.0
    # 2 ms at least: at 256 MiB/s a hog gains ~0.5 MiB between two samples;
    # a warm tick costs ~30 us, so even the tightest loop stays near 1.5 % of a core.
    min_interval: Duration = 0.002
    # Fill rates assumed at least / at most, MiB/s.  The floor is earlyoom's
    # 6000 MiB/s (its measurement with `stress`): from idle, a burst must not
    # find us asleep longer than that rate allows.  The ceiling bounds a
    # mis-measured spike; 64 GiB/s exceeds what 2 cores can fault in.
    min_rate_mib_s: float = 6000.0
    max_rate_mib_s: float = 65536.0
    swap_min_rate_mib_s: float = 800.0  # earlyoom's swap fill assumption

    def __post_init__(self) -> None:
        if self.min_interval <= 0 or self.min_interval > self.max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        rates = (self.min_rate_mib_s, self.max_rate_mib_s, self.swap_min_rate_mib_s)
        if not all(math.isfinite(r) and r > 0 for r in rates):
            raise ValueError("fill rates must be positive numbers")
        if self.min_rate_mib_s > self.max_rate_mib_s or self.swap_min_rate_mib_s > self.max_rate_mib_s:
            raise ValueError("need min_rate_mib_s and swap_min_rate_mib_s <= max_rate_mib_s")


@dataclass(frozen=True, slots=True)
class KillConfig(_Strict):
    # SIGTERM grace before SIGKILL (earlyoom never escalates on time; nohang
    # waits 10 s).  5 s lets a browser or editor save state and exit.
    grace: Duration = 5.0
    # After SIGKILL, how long to wait for the exit before calling the victim
    # stuck (D state, frozen cgroup) and moving on.  The 0.5-1.5 GiB hogs of
    # the integration tests exited ~30 ms after their signal; 2 s is ample.
    kill_timeout: Duration = 2.0
    # Wait after a kill for memory to be released before judging again.
    settle: Duration = 0.05
    # After a victim exits, choose no other victim until MemAvailable has
    # risen by half the victim's RSS+swap, or this long has passed (its
    # memory can take a while to show as available: without this wait, a
    # 60 s soak here killed a 32 MiB bystander right after 2 of 57 hogs).
    release_timeout: Duration = 1.0


def _argv_list(v: Any) -> Any:
    """A hook as ``/path``, ``[/path, arg]`` or a list of those -> tuple of argvs."""
    if isinstance(v, str):
        v = [[v]]
    elif isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v):
        v = [list(v)]
    if not isinstance(v, (list, tuple)):
        raise ValueError("expected a program path or a list of argv lists")
    out = []
    for argv in v:
        if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"a hook must be a non-empty argv list of strings, got {argv!r}")
        if not argv[0].startswith("/"):
            raise ValueError(f"a hook program must be an absolute path (no shell, no PATH search): {argv[0]!r}")
        out.append(tuple(argv))
    return tuple(out)


Argvs = Annotated[tuple[tuple[str, ...], ...], Parse(_argv_list)]


@dataclass(frozen=True, slots=True)
class HooksConfig(_Strict):
    """Programs run around a kill (never through a shell; see act/hooks.py)."""

    pre_kill: Argvs = ()
    post_kill: Argvs = ()
    # How long the kill waits for pre_kill programs: earlyoom's 200 ms, enough
    # to fork+exec a small program and read the victim's /proc entry.
    pre_kill_wait: Duration = 0.2
    # A hook still running after this is SIGKILLed (it must not pile up).
    timeout: Duration = 10.0
    # When pyoomd runs as root, hooks run as this user (no capabilities).
    user: str = "nobody"


@dataclass(frozen=True, slots=True)
class NotifyConfig(_Strict):
    """Desktop notifications over D-Bus (see report/notify.py)."""

    enabled: bool = False
    # At most one kill notification per user this often; more are counted and
    # summed up in the next one (a kill storm must not become a popup storm).
    min_interval: Duration = 10.0
    # Also warn when memory falls to the WARN level, before any kill.
    warn_low_memory: bool = False
    # Where per-user session buses live: <run_user_dir>/<uid>/bus.
    run_user_dir: str = "/run/user"
    # Who is told: "graphical" = users with an active local or remote
    # graphical session (x11, wayland, mir) as systemd-logind lists them on
    # the system bus; "all" = every user with a session bus.  Where logind
    # cannot be asked (no system bus, a container), "graphical" falls back to
    # "all" and says so once (notify_sessions_fallback).
    sessions: Literal["graphical", "all"] = "graphical"
    system_bus: str = "unix:path=/run/dbus/system_bus_socket"


@dataclass(frozen=True, slots=True)
class LowMemoryMonitorConfig(_Strict):
    """LowMemoryWarning to applications on the system bus, as
    low-memory-monitor sends it (see report/lowmem.py)."""

    # On by default: GNOME/GTK applications (GLib's GMemoryMonitor) trim
    # their caches when told, which can make a kill unnecessary; where a
    # low-memory-monitor runs, or there is no system bus, nothing is sent.
    enabled: bool = True
    system_bus: str = "unix:path=/run/dbus/system_bus_socket"
    # Each level (50 low at WARN, 100 medium at TERM, 255 critical at KILL)
    # is sent at most this often.
    min_interval: Duration = 15.0


@dataclass(frozen=True, slots=True)
class SoftActionsConfig(_Strict):
    """Policies' soft actions (``action:`` in a rule; see act/soft.py)."""

    # Where systemd's manager is asked to restart a unit (action: restart-unit).
    system_bus: str = "unix:path=/run/dbus/system_bus_socket"
    # A ``run`` program still running after this is SIGKILLed with its
    # process group (the kill does not wait for it: only the grace).
    timeout: Duration = 10.0


def _host_port(v: str | None) -> str | None:
    if v is not None:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected HOST:PORT, like 127.0.0.1:9101, got {v!r}")
    return v


@dataclass(frozen=True, slots=True)
class MetricsConfig(_Strict):
    """Prometheus metrics (see report/metrics.py); off unless one is set."""

    listen: Annotated[str | None, Check(_host_port)] = None  # "127.0.0.1:9101"
    textfile: str | None = None  # node_exporter textfile collector path (*.prom)
    textfile_interval: float = 15.0  # node_exporter's default scrape interval


@dataclass(frozen=True, slots=True)
class StatusConfig(_Strict):
    """The status socket behind ``pyoomd status`` (see report/control.py)."""

    socket: str | None = "/run/pyoomd/status.sock"  # null: no socket


def _absolute_dir(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"expected an absolute directory, got {v!r}")
    return v


@dataclass(frozen=True, slots=True)
class RecorderConfig(_Strict):
    """The flight recorder (report/recorder.py, TRACE.md): the last
    ``seconds`` of samples, process-table looks and events in a ring of at
    most ``memory_mib``, written to ``dir`` after each kill; the directory
    is kept to ``max_files`` traces and ``max_mib`` MiB."""

    enabled: bool = True
    dir: Annotated[str, Check(_absolute_dir)] = "/var/lib/pyoomd/traces"
    seconds: Annotated[float, Bounds(gt=0.0, le=3600.0), Parse(parse_duration_s)] = 120.0
    # 2 MiB: 120 s of samples at the fastest rate plus process-table looks
    # (measured: README, "Tune on a recorded episode").
    memory_mib: Annotated[float, Bounds(ge=0.25, le=256.0)] = 2.0
    max_files: Annotated[int, Bounds(ge=1, le=10000)] = 20
    max_mib: Annotated[float, Bounds(gt=0.0, le=100000.0)] = 50.0


@dataclass(frozen=True, slots=True)
class PsiWakeupConfig(_Strict):
    """The kernel PSI trigger that wakes the loop between samples (sense/psi.py)."""

    enabled: bool = True
    kind: Literal["some", "full"] = "some"
    # 150 ms of stall in 1 s: the kernel documentation's example, and early
    # enough to beat a freeze.  Without CAP_SYS_RESOURCE a 1 s window is
    # refused and 2 s is used instead (the startup event says so).
    stall: Duration = 0.15
    window: Duration = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.stall <= self.window or self.window > 10.0:
            raise ValueError("need 0 < stall <= window <= 10s (the kernel's limits)")


@dataclass(frozen=True, slots=True)
class PsiConfig(_Strict):
    """PSI as a kill condition (judge/pressure.py)."""

    enabled: bool = True
    line: Literal["some", "full"] = "full"
    avg: Literal["avg10", "avg60"] = "avg10"
    # full avg10 > 40 % for 10 s: everything non-idle was stalled on memory
    # 40 % of the time, for a whole avg10 window: a desktop is frozen by then.
    term: Percent = 40.0
    kill: Annotated[float | None, Parse(_pct_or_none)] = None
    duration: Duration = 10.0
    # oomd's and systemd-oomd's post-action delay: avg10 lags the cause by
    # about its 10 s window, so 15 s keeps the old pressure from a new kill.
    post_action_delay: Duration = 15.0
    wakeup: PsiWakeupConfig = PsiWakeupConfig()

    def __post_init__(self) -> None:
        if self.kill is not None and self.kill < self.term:
            raise ValueError(f"psi.kill ({self.kill:g}%) is below psi.term ({self.term:g}%)")


@dataclass(frozen=True, slots=True)
class SwapReliefConfig(_Strict):
    """Act at the memory levels when swap does not relieve the pressure
    (judge/relief.py); README "Swap that cannot keep up" gives the measurements."""

    enabled: bool = True
    # Net MemAvailable decline and full stall share are measured over this.
    window: Duration = 1.0
    # Swap is not keeping up when, at the measured decline, MemAvailable
    # would reach the floor (KILL level at TERM, zero at KILL) this soon.
    horizon: Duration = 5.0
    # ... or when memory stalls (PSI full) take this share of the window.
    stall: Percent = 20.0

    def __post_init__(self) -> None:
        if not (0 < self.window <= 10.0 and self.horizon > 0):
            raise ValueError("need 0 < window <= 10s and horizon > 0")


@dataclass(frozen=True, slots=True)
class ThrashConfig(_Strict):
    """The thrash detector (judge/thrash.py); README "Thrash" gives the
    measurements behind the defaults."""

    enabled: bool = True
    # PSI full stall share of the window, from the total counters.
    stall: Percent = 30.0
    window: Duration = 1.0
    # Held this long: TERM; twice as long: KILL.
    duration: Duration = 1.5
    # Thrashing, not just waiting: swap-ins or page cache refaults at least this fast.
    min_swapin_mib_s: Annotated[float, Bounds(ge=0.0)] = 1.0
    min_refault_mib_s: Annotated[float, Bounds(ge=0.0)] = 4.0
    post_action_delay: Duration = 3.0

    def __post_init__(self) -> None:
        if not (0 < self.window <= 10.0 and self.duration > 0 and self.stall > 0):
            raise ValueError("need 0 < window <= 10s, duration > 0 and stall > 0%")


@dataclass(frozen=True, slots=True)
class KernelLogConfig(_Strict):
    """Report the kernel OOM killer's own kills (sense/kmsg.py): the kernel
    log is followed from its end, in a thread of its own."""

    enabled: bool = True
    path: str = "/dev/kmsg"  # another path (a file or FIFO) stands in for tests


def _cgroup_paths(v: Any) -> Any:
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x.startswith("/") for x in v):
        raise ValueError("expected cgroup paths starting with /")
    if "/" in [x.rstrip("/") or "/" for x in v]:
        raise ValueError("the root cgroup cannot be killed whole")
    return tuple(x.rstrip("/") for x in v)


@dataclass(frozen=True, slots=True)
class CgroupsConfig(_Strict):
    """How cgroups shape the kill (sense/cgroup.py, act/cgroup_kill.py)."""

    # Honour memory.oom.group = 1 on the victim's cgroup, as the kernel does:
    # the workload cannot run partly, so every member goes.
    oom_group: bool = True
    # Cgroup v2 paths whose victims take their whole (leaf) cgroup with them,
    # like a policy's `kill: cgroup`: "/system.slice/build.service" matches it
    # and every cgroup below it.
    kill_whole: Annotated[tuple[str, ...], Parse(_cgroup_paths)] = ()
    # Honour systemd's user.oomd_avoid / user.oomd_omit (ManagedOOMPreference=).
    preferences: bool = True


def _cgroup_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"a cgroup path starts with /: {v!r}")
    return v


@dataclass(frozen=True, slots=True)
class CgroupChoiceConfig(_Strict):
    """Cgroup-aware choice: pick the worst leaf cgroup below ``root``, then
    kill only the worst process inside it (not the whole session)."""

    enabled: bool = False
    root: Annotated[str, Check(_cgroup_path)] = "/user.slice"
    by: Literal["pressure", "memory"] = "pressure"


@dataclass(frozen=True, slots=True)
class ChoiceConfig(_Strict):
    """How the victim is chosen among the candidates (judge/fairshare.py)."""

    # Per-user fair share: first the user furthest above an equal share of
    # memory, then that user's worst process.  Off: it changes who dies.
    by_user: bool = False


@dataclass(frozen=True, slots=True)
class GrowthConfig(_Strict):
    """Growth-aware ranking (judge/growth.py): the cause outranks the bystander."""

    enabled: bool = True
    # points = weight * 1000 * grown / MemTotal; 10 puts a leak that grew
    # 3 % of memory (+300) level with a browser tab's oom_score_adj +300.
    weight: Annotated[float, Bounds(ge=0.0, le=1000.0)] = 10.0
    window: Duration = 20.0  # seconds of history (see judge/growth.py for why)
    # Follow processes once a second between WARN and TERM: one small read
    # (oom_score) per process, plus stat and status of each one followed.
    interval: Duration = 1.0
    # How many of the biggest processes to follow, besides any that grew.
    follow_top: Annotated[int, Bounds(ge=1, le=4096)] = 16


@dataclass(frozen=True, slots=True)
class Settings(_Strict):
    """The whole daemon configuration, as validated from YAML and flags."""

    memory: MemoryConfig = MemoryConfig()
    swap: SwapConfig = SwapConfig()
    sampling: SamplingConfig = SamplingConfig()
    kill: KillConfig = KillConfig()
    dry_run: bool = False
    log_format: Literal["auto", "console", "json"] = "auto"
    reader: Literal["auto", "cffi", "python"] = "auto"
    policy_dirs: tuple[str, ...] = (DEFAULT_POLICY_DIR,)
    growth: GrowthConfig = GrowthConfig()
    # How many candidates are shown in the kill event.
    report_top: Annotated[int, Bounds(ge=0, le=100)] = 5
    psi: PsiConfig = PsiConfig()
    swap_relief: SwapReliefConfig = SwapReliefConfig()
    thrash: ThrashConfig = ThrashConfig()
    kernel_log: KernelLogConfig = KernelLogConfig()
    cgroups: CgroupsConfig = CgroupsConfig()
    cgroup_choice: CgroupChoiceConfig = CgroupChoiceConfig()
    choice: ChoiceConfig = ChoiceConfig()
    hooks: HooksConfig = HooksConfig()
    notify: NotifyConfig = NotifyConfig()
    soft_actions: SoftActionsConfig = SoftActionsConfig()
    low_memory_monitor: LowMemoryMonitorConfig = LowMemoryMonitorConfig()
    metrics: MetricsConfig = MetricsConfig()
    status: StatusConfig = StatusConfig()
    recorder: RecorderConfig = RecorderConfig()
    # earlyoom's -r: log a memory_report event this often (0: never).
    report_interval: float = 0.0
    # earlyoom's -p: run at niceness -20 and in the realtime I/O class.
    raise_priority: bool = False

    def compile(self, mem_total_kib: int, swap_total_kib: int) -> Thresholds:
        """Resolve percentages (see ``amounts.compile_thresholds``)."""
        return compile_thresholds(self.memory, self.swap, mem_total_kib, swap_total_kib)
