"""Daemon settings (interim: pydantic models, until the dataclass schema)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .amounts import Amount, Thresholds, compile_thresholds, parse_amount, parse_duration_s

DEFAULT_POLICY_DIR = "/etc/pyoomd/policies.d"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LevelsConfig(_Strict):
    """TERM and KILL levels for one resource (memory or swap)."""

    term: Amount
    kill: Amount

    @field_validator("term", "kill", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> Amount:
        return v if isinstance(v, Amount) else parse_amount(v)


class MemoryConfig(LevelsConfig):
    term: Amount = Amount(pct=10.0)
    kill: Amount = Amount(pct=5.0)
    # WARN: above TERM; where sampling tightens and growth tracking starts.
    warn: Amount = Amount(pct=20.0)

    @field_validator("warn", mode="before")
    @classmethod
    def _warn(cls, v: Any) -> Amount:
        return v if isinstance(v, Amount) else parse_amount(v)


class SwapConfig(LevelsConfig):
    term: Amount = Amount(pct=10.0)
    kill: Amount = Amount(pct=5.0)


class SamplingConfig(_Strict):
    # 1 s at most between samples when memory is plentiful: earlyoom's ceiling,
    # one tick a second costs 0.03 % CPU idle (README, Benchmarks: ~280 us
    # for a tick after a second asleep, ~30 us warm).
    max_interval: float = 1.0
    # 2 ms at least: at 256 MiB/s a hog gains ~0.5 MiB between two samples;
    # a warm tick costs ~30 us, so even the tightest loop stays near 1.5 % of a core.
    min_interval: float = 0.002
    # Fill rates assumed at least / at most, MiB/s.  The floor is earlyoom's
    # 6000 MiB/s (its measurement with `stress`): from idle, a burst must not
    # find us asleep longer than that rate allows.  The ceiling bounds a
    # mis-measured spike; 64 GiB/s exceeds what 2 cores can fault in.
    min_rate_mib_s: float = 6000.0
    max_rate_mib_s: float = 65536.0
    swap_min_rate_mib_s: float = 800.0  # earlyoom's swap fill assumption

    @field_validator("max_interval", "min_interval", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)

    @model_validator(mode="after")
    def _order(self) -> SamplingConfig:
        if self.min_interval <= 0 or self.min_interval > self.max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        rates = (self.min_rate_mib_s, self.max_rate_mib_s, self.swap_min_rate_mib_s)
        if not all(math.isfinite(r) and r > 0 for r in rates):
            raise ValueError("fill rates must be positive numbers")
        if self.min_rate_mib_s > self.max_rate_mib_s or self.swap_min_rate_mib_s > self.max_rate_mib_s:
            raise ValueError("need min_rate_mib_s and swap_min_rate_mib_s <= max_rate_mib_s")
        return self


class KillConfig(_Strict):
    # SIGTERM grace before SIGKILL (earlyoom never escalates on time; nohang
    # waits 10 s).  5 s lets a browser or editor save state and exit.
    grace: float = 5.0
    # After SIGKILL, how long to wait for the exit before calling the victim
    # stuck (D state, frozen cgroup) and moving on.  The 0.5-1.5 GiB hogs of
    # the integration tests exited ~30 ms after their signal; 2 s is ample.
    kill_timeout: float = 2.0
    # Wait after a kill for memory to be released before judging again.
    settle: float = 0.05
    # After a victim exits, choose no other victim until MemAvailable has
    # risen by half the victim's RSS+swap, or this long has passed (its
    # memory can take a while to show as available: without this wait, a
    # 60 s soak here killed a 32 MiB bystander right after 2 of 57 hogs).
    release_timeout: float = 1.0

    @field_validator("grace", "kill_timeout", "settle", "release_timeout", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)


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


class HooksConfig(_Strict):
    """Programs run around a kill (never through a shell; see act/hooks.py)."""

    pre_kill: tuple[tuple[str, ...], ...] = ()
    post_kill: tuple[tuple[str, ...], ...] = ()
    # How long the kill waits for pre_kill programs: earlyoom's 200 ms, enough
    # to fork+exec a small program and read the victim's /proc entry.
    pre_kill_wait: float = 0.2
    # A hook still running after this is SIGKILLed (it must not pile up).
    timeout: float = 10.0
    # When pyoomd runs as root, hooks run as this user (no capabilities).
    user: str = "nobody"

    @field_validator("pre_kill", "post_kill", mode="before")
    @classmethod
    def _argvs(cls, v: Any) -> Any:
        return _argv_list(v)

    @field_validator("pre_kill_wait", "timeout", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)


class NotifyConfig(_Strict):
    """Desktop notifications over D-Bus (see act/notify.py)."""

    enabled: bool = False
    # At most one kill notification per user this often; more are counted and
    # summed up in the next one (a kill storm must not become a popup storm).
    min_interval: float = 10.0
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

    @field_validator("min_interval", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)


class LowMemoryMonitorConfig(_Strict):
    """LowMemoryWarning to applications on the system bus, as
    low-memory-monitor sends it (see act/lowmem.py)."""

    # On by default: GNOME/GTK applications (GLib's GMemoryMonitor) trim
    # their caches when told, which can make a kill unnecessary; where a
    # low-memory-monitor runs, or there is no system bus, nothing is sent.
    enabled: bool = True
    system_bus: str = "unix:path=/run/dbus/system_bus_socket"
    # Each level (50 low at WARN, 100 medium at TERM, 255 critical at KILL)
    # is sent at most this often.
    min_interval: float = 15.0

    @field_validator("min_interval", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)


class SoftActionsConfig(_Strict):
    """Policies' soft actions (``action:`` in a rule; see act/soft.py)."""

    # Where systemd's manager is asked to restart a unit (action: restart-unit).
    system_bus: str = "unix:path=/run/dbus/system_bus_socket"
    # A ``run`` program still running after this is SIGKILLed with its
    # process group (the kill does not wait for it: only the grace).
    timeout: float = 10.0

    @field_validator("timeout", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)


class MetricsConfig(_Strict):
    """Prometheus metrics (see report/metrics.py); off unless one is set."""

    listen: str | None = None  # "127.0.0.1:9101"
    textfile: str | None = None  # node_exporter textfile collector path (*.prom)
    textfile_interval: float = 15.0  # node_exporter's default scrape interval

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is not None:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"expected HOST:PORT, like 127.0.0.1:9101, got {v!r}")
        return v


class StatusConfig(_Strict):
    """The status socket behind ``pyoomd status`` (see report/control.py)."""

    socket: str | None = "/run/pyoomd/status.sock"  # null: no socket


class RecorderConfig(_Strict):
    """The flight recorder (report/recorder.py, TRACE.md): the last
    ``seconds`` of samples, process-table looks and events in a ring of at
    most ``memory_mib``, written to ``dir`` after each kill; the directory
    is kept to ``max_files`` traces and ``max_mib`` MiB."""

    enabled: bool = True
    dir: str = "/var/lib/pyoomd/traces"
    seconds: float = Field(default=120.0, gt=0.0, le=3600.0)
    # 2 MiB: 120 s of samples at the fastest rate plus process-table looks
    # (measured: README, "Tune on a recorded episode").
    memory_mib: float = Field(default=2.0, ge=0.25, le=256.0)
    max_files: int = Field(default=20, ge=1, le=10000)
    max_mib: float = Field(default=50.0, gt=0.0, le=100000.0)

    @field_validator("seconds", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)

    @field_validator("dir")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"expected an absolute directory, got {v!r}")
        return v


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


class PsiWakeupConfig(_Strict):
    """The kernel PSI trigger that wakes the loop between samples (sense/psi.py)."""

    enabled: bool = True
    kind: Literal["some", "full"] = "some"
    # 150 ms of stall in 1 s: the kernel documentation's example, and early
    # enough to beat a freeze.  Without CAP_SYS_RESOURCE a 1 s window is
    # refused and 2 s is used instead (the startup event says so).
    stall: float = 0.15
    window: float = 1.0

    @field_validator("stall", "window", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)

    @model_validator(mode="after")
    def _order(self) -> PsiWakeupConfig:
        if not 0 < self.stall <= self.window or self.window > 10.0:
            raise ValueError("need 0 < stall <= window <= 10s (the kernel's limits)")
        return self


class PsiConfig(_Strict):
    """PSI as a kill condition (judge/pressure.py)."""

    enabled: bool = True
    line: Literal["some", "full"] = "full"
    avg: Literal["avg10", "avg60"] = "avg10"
    # full avg10 > 40 % for 10 s: everything non-idle was stalled on memory
    # 40 % of the time, for a whole avg10 window: a desktop is frozen by then.
    term: float = 40.0
    kill: float | None = None
    duration: float = 10.0
    # oomd's and systemd-oomd's post-action delay: avg10 lags the cause by
    # about its 10 s window, so 15 s keeps the old pressure from a new kill.
    post_action_delay: float = 15.0
    wakeup: PsiWakeupConfig = PsiWakeupConfig()

    @field_validator("term", "kill", mode="before")
    @classmethod
    def _percent(cls, v: Any) -> float | None:
        return None if v is None else _pct(v)

    @field_validator("duration", "post_action_delay", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)

    @model_validator(mode="after")
    def _order(self) -> PsiConfig:
        if self.kill is not None and self.kill < self.term:
            raise ValueError(f"psi.kill ({self.kill:g}%) is below psi.term ({self.term:g}%)")
        return self


class SwapReliefConfig(_Strict):
    """Act at the memory levels when swap does not relieve the pressure
    (judge/relief.py); README "Swap that cannot keep up" gives the measurements."""

    enabled: bool = True
    # Net MemAvailable decline and full stall share are measured over this.
    window: float = 1.0
    # Swap is not keeping up when, at the measured decline, MemAvailable
    # would reach the floor (KILL level at TERM, zero at KILL) this soon.
    horizon: float = 5.0
    # ... or when memory stalls (PSI full) take this share of the window.
    stall: float = 20.0

    @field_validator("window", "horizon", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)

    @field_validator("stall", mode="before")
    @classmethod
    def _percent(cls, v: Any) -> float:
        return _pct(v)

    @model_validator(mode="after")
    def _positive(self) -> SwapReliefConfig:
        if not (0 < self.window <= 10.0 and self.horizon > 0):
            raise ValueError("need 0 < window <= 10s and horizon > 0")
        return self


class ThrashConfig(_Strict):
    """The thrash detector (judge/thrash.py); README "Thrash" gives the
    measurements behind the defaults."""

    enabled: bool = True
    # PSI full stall share of the window, from the total counters.
    stall: float = 30.0
    window: float = 1.0
    # Held this long: TERM; twice as long: KILL.
    duration: float = 1.5
    # Thrashing, not just waiting: swap-ins or page cache refaults at least this fast.
    min_swapin_mib_s: float = Field(default=1.0, ge=0.0)
    min_refault_mib_s: float = Field(default=4.0, ge=0.0)
    post_action_delay: float = 3.0

    @field_validator("window", "duration", "post_action_delay", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)

    @field_validator("stall", mode="before")
    @classmethod
    def _percent(cls, v: Any) -> float:
        return _pct(v)

    @model_validator(mode="after")
    def _positive(self) -> ThrashConfig:
        if not (0 < self.window <= 10.0 and self.duration > 0 and self.stall > 0):
            raise ValueError("need 0 < window <= 10s, duration > 0 and stall > 0%")
        return self


class KernelLogConfig(_Strict):
    """Report the kernel OOM killer's own kills (sense/kmsg.py): the kernel
    log is followed from its end, in a thread of its own."""

    enabled: bool = True
    path: str = "/dev/kmsg"  # another path (a file or FIFO) stands in for tests


class CgroupsConfig(_Strict):
    """How cgroups shape the kill (sense/cgroup.py, act/cgroup_kill.py)."""

    # Honour memory.oom.group = 1 on the victim's cgroup, as the kernel does:
    # the workload cannot run partly, so every member goes.
    oom_group: bool = True
    # Cgroup v2 paths whose victims take their whole (leaf) cgroup with them,
    # like a policy's `kill: cgroup`: "/system.slice/build.service" matches it
    # and every cgroup below it.
    kill_whole: tuple[str, ...] = ()
    # Honour systemd's user.oomd_avoid / user.oomd_omit (ManagedOOMPreference=).
    preferences: bool = True

    @field_validator("kill_whole", mode="before")
    @classmethod
    def _paths(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x.startswith("/") for x in v):
            raise ValueError("expected cgroup paths starting with /")
        if "/" in [x.rstrip("/") or "/" for x in v]:
            raise ValueError("the root cgroup cannot be killed whole")
        return tuple(x.rstrip("/") for x in v)


class CgroupChoiceConfig(_Strict):
    """Cgroup-aware choice: pick the worst leaf cgroup below ``root``, then
    kill only the worst process inside it (not the whole session)."""

    enabled: bool = False
    root: str = "/user.slice"
    by: Literal["pressure", "memory"] = "pressure"

    @field_validator("root")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"a cgroup path starts with /: {v!r}")
        return v


class ChoiceConfig(_Strict):
    """How the victim is chosen among the candidates (judge/fairshare.py)."""

    # Per-user fair share: first the user furthest above an equal share of
    # memory, then that user's worst process.  Off: it changes who dies.
    by_user: bool = False


class GrowthConfig(_Strict):
    """Growth-aware ranking (judge/growth.py): the cause outranks the bystander."""

    enabled: bool = True
    # points = weight * 1000 * grown / MemTotal; 10 puts a leak that grew
    # 3 % of memory (+300) level with a browser tab's oom_score_adj +300.
    weight: float = Field(default=10.0, ge=0.0, le=1000.0)
    window: float = 20.0  # seconds of history (see judge/growth.py for why)
    # Follow processes once a second between WARN and TERM: one small read
    # (oom_score) per process, plus stat and status of each one followed.
    interval: float = 1.0
    # How many of the biggest processes to follow, besides any that grew.
    follow_top: int = Field(default=16, ge=1, le=4096)

    @field_validator("window", "interval", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)


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
    report_top: int = Field(default=5, ge=0, le=100)
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
