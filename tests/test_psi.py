"""PSI: trigger registration and fallbacks, the Waiter, and PSI as a kill
condition in the pure judge (fake clock: ``now`` is passed in)."""

from __future__ import annotations

import errno
import os

import pytest

from pyoomd.errors import ConfigError
from pyoomd.judge.decide import Judge
from pyoomd.judge.pressure import PressureJudge, PsiRule, compile_rule
from pyoomd.model import Level, MemSample, Pressure, PsiLine
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.psi import TriggerSpec, Waiter, open_waiter, register, widened
from pyoomd.settings.amounts import Thresholds
from pyoomd.settings.load import settings_from_text
from pyoomd.settings.schema import SamplingConfig, Settings

GIB = 1 << 20  # KiB
REAL_PSI = "/proc/pressure/memory"


# -- registration ------------------------------------------------------------------
class FakeKernel:
    """Accepts only windows that are a multiple of ``step_us`` (0: any).
    Its "file" is /proc/pressure/memory opened read-only: it passes the
    kernel-file check, and nothing is ever written to it."""

    def __init__(self, step_us: int = 2_000_000, error: int = errno.EINVAL) -> None:
        self.step_us = step_us
        self.error = error
        self.writes: list[bytes] = []
        self.closed: list[int] = []

    def open(self, path: str, flags: int) -> int:
        assert flags & os.O_RDWR and flags & os.O_NONBLOCK
        return os.open(REAL_PSI, os.O_RDONLY)

    def write(self, fd: int, data: bytes) -> int:
        self.writes.append(data)
        window = int(data.rstrip(b"\0").split()[2])
        if self.step_us and window % self.step_us:
            raise OSError(self.error, os.strerror(self.error))
        return len(data)


needs_psi = pytest.mark.skipif(not os.path.exists(REAL_PSI), reason=f"no PSI here ({REAL_PSI} missing)")


@needs_psi
def test_sub_2s_window_is_widened_and_the_mode_says_why() -> None:
    k = FakeKernel()
    fd, mode = register("/x", TriggerSpec("some", 150_000, 1_000_000), k.open, k.write)
    assert fd is not None
    os.close(fd)
    assert k.writes == [b"some 150000 1000000\0", b"some 150000 2000000\0"]
    assert mode == "psi-trigger some 150ms/2s (1s window refused: no CAP_SYS_RESOURCE)"


@needs_psi
def test_privileged_kernel_keeps_the_requested_window() -> None:
    k = FakeKernel(step_us=0)
    fd, mode = register("/x", TriggerSpec("full", 100_000, 500_000), k.open, k.write)
    assert fd is not None
    os.close(fd)
    assert mode == "psi-trigger full 100ms/500ms"


def test_a_regular_file_is_never_written(tmp_path: os.PathLike[str]) -> None:
    """A fixture /proc tree holds regular files: writing a trigger there would corrupt them."""
    fake = os.path.join(tmp_path, "memory")
    data = b"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    with open(fake, "wb") as f:
        f.write(data)
    fd, mode = register(fake, TriggerSpec("some", 150_000, 1_000_000))
    assert fd is None and "not a kernel PSI file" in mode
    with open(fake, "rb") as f:
        assert f.read() == data


def test_no_psi_file_means_sampling_only() -> None:
    fd, mode = register("/nonexistent/pressure/memory", TriggerSpec("some", 150_000, 1_000_000))
    assert fd is None and mode == "sampling only (no PSI)"


@needs_psi
def test_refused_for_another_reason_falls_back_to_sampling() -> None:
    k = FakeKernel(step_us=1, error=errno.EPERM)
    k.step_us = 3  # every window refused with EPERM
    fd, mode = register("/x", TriggerSpec("some", 150_000, 1_000_000), k.open, k.write)
    assert fd is None and mode.startswith("sampling only (trigger refused")


def test_widened() -> None:
    assert widened(TriggerSpec("some", 150_000, 1_000_000)) == TriggerSpec("some", 150_000, 2_000_000)
    assert widened(TriggerSpec("some", 3_000_000, 3_000_000)) == TriggerSpec("some", 3_000_000, 4_000_000)
    assert widened(TriggerSpec("some", 150_000, 4_000_000)) is None  # already a multiple
    assert widened(TriggerSpec("some", 150_000, 10_000_000)) is None


@pytest.mark.skipif(not os.path.exists(REAL_PSI), reason=f"no PSI here ({REAL_PSI} missing)")
def test_real_kernel_trigger_registration() -> None:
    """The kernel itself: a 1 s window is refused without CAP_SYS_RESOURCE and
    2 s accepted; with the capability 1 s is accepted.  Either way a trigger
    is in force."""
    w = open_waiter(Procfs(), "some", 0.15, 1.0)
    try:
        assert w.mode in ("psi-trigger some 150ms/1s",
                          "psi-trigger some 150ms/2s (1s window refused: no CAP_SYS_RESOURCE)"), w.mode
        assert w.wait(0.01) in (False, True)  # a real poll on the trigger fd
    finally:
        w.close()


# -- the Waiter ------------------------------------------------------------------------
def test_waiter_without_trigger_sleeps() -> None:
    slept: list[float] = []
    w = Waiter(None, "sampling only (no PSI)", sleep=slept.append)
    assert w.wait(0.25) is False
    w(0.5)
    assert slept == [0.25, 0.5]


def test_waiter_wakes_at_once_on_pollpri() -> None:
    """A socket's out-of-band byte raises POLLPRI, as a PSI trigger does."""
    import socket
    import time

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    tcp_a = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(tcp_a.getsockname())
    server, _ = tcp_a.accept()
    try:
        w = Waiter(server.fileno(), "psi-trigger test")
        t0 = time.monotonic()
        assert w.wait(0.05) is False
        client.send(b"!", socket.MSG_OOB)
        assert w.wait(5.0) is True
        assert time.monotonic() - t0 < 2.0
        assert w.wakeups == 1
        w.fd = None  # the socket closes itself
    finally:
        for s in (a, b, client, server, tcp_a):
            s.close()


# -- PSI as a kill condition (pure, fake clock) ------------------------------------------
def psi_sample(full10: float, avail_kib: int = 2 * GIB, some10: float | None = None) -> MemSample:
    some = PsiLine(some10 if some10 is not None else full10, 0.0, 0.0, 0)
    return MemSample(16 * GIB, avail_kib, 0, 0, Pressure(some, PsiLine(full10, 0.0, 0.0, 0)))


RULE = PsiRule(enabled=True, line="full", avg="avg10", term_pct=40.0, kill_pct=70.0, duration_s=10.0,
               post_action_delay_s=15.0, gate_kib=3 * GIB)


def test_term_after_sustained_duration_only() -> None:
    j = PressureJudge(RULE)
    assert j.judge(psi_sample(50), 100.0).level == Level.OK
    v = j.judge(psi_sample(50), 105.0)
    assert v.level == Level.OK and v.due_in_s == pytest.approx(5.0)
    v = j.judge(psi_sample(50), 110.0)
    assert v.level == Level.TERM and "full avg10 50.0% > term 40%" in v.reason


def test_a_dip_restarts_the_timer() -> None:
    j = PressureJudge(RULE)
    j.judge(psi_sample(50), 0.0)
    j.judge(psi_sample(30), 6.0)
    assert j.judge(psi_sample(50), 12.0).level == Level.OK
    assert j.judge(psi_sample(50), 22.0).level == Level.TERM


def test_kill_threshold_sustained() -> None:
    j = PressureJudge(RULE)
    j.judge(psi_sample(80), 0.0)
    assert j.judge(psi_sample(80), 10.0).level == Level.KILL


def test_gate_plenty_of_memory_never_kills_on_psi() -> None:
    """An I/O-heavy job with plenty of memory available (nohang's false kill)."""
    j = PressureJudge(RULE)
    for t in range(0, 60, 2):
        assert j.judge(psi_sample(95, avail_kib=10 * GIB), float(t)).level == Level.OK


def test_post_action_delay() -> None:
    j = PressureJudge(RULE)
    j.judge(psi_sample(50), 0.0)
    assert j.judge(psi_sample(50), 10.0).level == Level.TERM
    j.note_action(10.0)
    for t in (11.0, 20.0, 24.9):
        v = j.judge(psi_sample(60), t)
        assert v.level == Level.OK and "post-action delay" in v.reason
    j.judge(psi_sample(60), 25.0)  # the delay is over: the timer starts afresh
    assert j.judge(psi_sample(60), 34.0).level == Level.OK
    assert j.judge(psi_sample(60), 35.0).level == Level.TERM


def test_some_and_avg60_and_no_full_line() -> None:
    rule = PsiRule(True, "some", "avg60", 10.0, None, 0.0, 15.0, 3 * GIB)
    s = MemSample(16 * GIB, 2 * GIB, 0, 0, Pressure(PsiLine(0.0, 20.0, 0.0, 0), None))
    assert PressureJudge(rule).judge(s, 0.0).level == Level.TERM
    full_rule = PsiRule(True, "full", "avg10", 10.0, None, 0.0, 15.0, 3 * GIB)
    assert PressureJudge(full_rule).judge(s, 0.0).level == Level.OK  # no full line: no PSI verdict
    assert PressureJudge(full_rule).judge(MemSample(16 * GIB, GIB, 0, 0), 0.0).level == Level.OK


def test_judge_combines_memory_and_psi_and_wakes_for_the_timer() -> None:
    th = Thresholds(mem_warn_kib=3 * GIB, mem_term_kib=GIB, mem_kill_kib=GIB // 2, swap_term_kib=0, swap_kill_kib=0)
    j = Judge(th, SamplingConfig(), RULE)
    d = j.judge(psi_sample(50), 0.0)
    assert d.level == Level.WARN
    d = j.judge(psi_sample(50), 9.95)
    assert d.level == Level.WARN and d.sleep_s == pytest.approx(0.05)  # wakes when the timer is due
    d = j.judge(psi_sample(50), 10.0)
    assert d.level == Level.TERM and d.reason.startswith("PSI full avg10 50.0%")
    assert j.level_now(psi_sample(50), 10.1) == Level.TERM
    j.note_action(10.2)
    assert j.level_now(psi_sample(50), 10.3) == Level.WARN


def test_judge_without_psi_rule_is_unchanged() -> None:
    th = Thresholds(3 * GIB, GIB, GIB // 2, 0, 0)
    j = Judge(th, SamplingConfig())
    assert j.judge(psi_sample(99), 0.0).level == Level.WARN
    j.note_action(0.0)  # harmless


# -- config ------------------------------------------------------------------------------
def test_psi_config_defaults_and_compile() -> None:
    s = Settings()
    assert (s.psi.line, s.psi.avg, s.psi.term, s.psi.kill, s.psi.duration, s.psi.post_action_delay) == \
        ("full", "avg10", 40.0, None, 10.0, 15.0)
    rule = compile_rule(s.psi, 1234)
    assert rule.gate_kib == 1234 and rule.enabled


def test_psi_config_parsing_and_errors() -> None:
    s = settings_from_text("c.yaml", "psi: {line: some, avg: avg60, term: 25%, kill: 60, duration: 5s,\n"
                                     "      post_action_delay: 30s, wakeup: {stall: 100ms, window: 2s}}\n")
    assert (s.psi.term, s.psi.kill, s.psi.duration, s.psi.wakeup.stall) == (25.0, 60.0, 5.0, 0.1)
    for bad, where in [("psi: {term: 140%}", "psi.term"), ("psi: {line: most}", "psi.line"),
                       ("psi: {term: 50, kill: 40}", "psi"), ("psi: {wakeup: {window: 20s}}", "psi.wakeup"),
                       ("psi: {treshold: 5}", "psi.treshold")]:
        with pytest.raises(ConfigError) as e:
            settings_from_text("c.yaml", bad)
        assert where in str(e.value) and "c.yaml" in str(e.value)


def test_cgroup_config() -> None:
    s = settings_from_text("c.yaml", "cgroups: {kill_whole: /system.slice/build.service/}\n"
                                     "cgroup_choice: {enabled: true, root: /user.slice, by: memory}\n")
    assert s.cgroups.kill_whole == ("/system.slice/build.service",)
    assert s.cgroup_choice.enabled and s.cgroup_choice.by == "memory"
    for bad in ("cgroups: {kill_whole: [/]}", "cgroups: {kill_whole: [relative]}",
                "cgroup_choice: {root: user.slice}", "cgroup_choice: {by: cpu}"):
        with pytest.raises(ConfigError):
            settings_from_text("c.yaml", bad)
