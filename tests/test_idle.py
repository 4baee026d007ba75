"""The idle wait: Sampler.idle_wait (the C loop and its Python fallback) on
fixture files, the meminfo fast path and PSI reuse of the C reader, and
Daemon.run() choosing the idle wait only at the OK level."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzzing import fuzz
from helpers import EXT, FIXTURE_PROC, FIXTURES, MEMINFO, PSI, fake_proc, needs_cffi
from hypothesis import given
from hypothesis import strategies as st
from logcapture import Log

from pyoomd.act import selfprotect
from pyoomd.daemon import IDLE_HOUSEKEEPING_S, Daemon
from pyoomd.model import Level, MemSample
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.psi import Waiter
from pyoomd.sense.sample import IdleParams, IdleResult, Sampler, idle_sleep_s, make_memsample
from pyoomd.settings.load import settings_from_dict

BACKENDS = ["python", pytest.param("cffi", marks=needs_cffi)]
GIB = 1 << 20


def avail_of(data: bytes) -> int:
    for line in data.splitlines():
        if line.startswith(b"MemAvailable:"):
            return int(line.split()[1])
    raise AssertionError("no MemAvailable")


def with_avail(data: bytes, kib: int) -> bytes:
    out = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"MemAvailable:"):
            line = b"MemAvailable:   %8d kB\n" % kib
        out.append(line)
    return b"".join(out)


def params(gate_kib: int, timeout_s: float = 5.0, **kw: Any) -> IdleParams:
    base: dict[str, Any] = {"gate_kib": gate_kib, "timeout_s": timeout_s, "first_sleep_s": 0.0,
                            "min_interval_s": 0.002, "max_interval_s": 0.05, "min_rate_kib_s": 6000 * 1024.0,
                            "max_rate_kib_s": 65536 * 1024.0}
    base.update(kw)
    return IdleParams(**base)


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - t


# -- Sampler.idle_wait, both backends ----------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_returns_at_once_at_or_below_gate(tmp_path: Path, backend: str) -> None:
    procfs = fake_proc(tmp_path)
    with Sampler(procfs, backend) as s:
        got, took = timed(s.idle_wait, params(avail_of(MEMINFO)))  # at the gate: returns
        assert got.reason == "gate" and got.samples == 1 and took < 0.5
        assert got.sample == s.read()  # a whole sample, PSI included
        assert got.sample.psi is not None and got.prev_age_s is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_sleeps_above_gate_until_deadline(tmp_path: Path, backend: str) -> None:
    procfs = fake_proc(tmp_path)
    with Sampler(procfs, backend) as s:
        got, took = timed(s.idle_wait, params(avail_of(MEMINFO) - 1, timeout_s=0.4, first_sleep_s=0.05))
        assert got.reason == "deadline"
        assert 0.38 <= took < 1.5
        # max_interval 50 ms, headroom 1 KiB: sampled at every max_interval at least
        assert got.samples >= 5
        assert got.sample == s.read()
        assert got.prev_age_s is not None and 0 < got.prev_age_s <= 0.2
        assert got.prev_available_kib == avail_of(MEMINFO)


@pytest.mark.parametrize("backend", BACKENDS)
def test_returns_when_memory_falls_to_gate(tmp_path: Path, backend: str) -> None:
    procfs = fake_proc(tmp_path)
    start = avail_of(MEMINFO)
    gate = start - 100 * 1024

    def fall() -> None:
        time.sleep(0.3)
        (tmp_path / "meminfo").write_bytes(with_avail(MEMINFO, gate - 1))

    with Sampler(procfs, backend) as s:
        t = threading.Thread(target=fall)
        t.start()
        got, took = timed(s.idle_wait, params(gate, timeout_s=10.0))
        t.join()
    assert got.reason == "gate" and 0.25 < took < 2.0
    assert got.sample.mem_available_kib == gate - 1
    assert got.prev_available_kib == start and got.prev_age_s is not None and got.prev_age_s < 0.2


@pytest.mark.parametrize("backend", BACKENDS)
def test_psi_trigger_fd_pollpri(tmp_path: Path, backend: str) -> None:
    """POLLPRI faked with TCP urgent data (what a PSI trigger reports)."""
    procfs = fake_proc(tmp_path)
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        sent: list[float] = []
        with Sampler(procfs, backend) as s:  # the event comes 0.2 s into the wait, however slow the set-up
            timer = threading.Timer(0.2, lambda: (sent.append(time.monotonic()), cli.send(b"!", socket.MSG_OOB)))
            timer.start()
            got, took = timed(s.idle_wait, params(0, timeout_s=10.0, psi_fd=conn.fileno()))
            woke = time.monotonic()
        timer.join()
        assert got.reason == "psi" and got.revents & select.POLLPRI
        assert sent and woke >= sent[0] and took < 2.0  # it waited for the event, then woke at once
        assert got.sample.mem_available_kib == avail_of(MEMINFO)  # read afresh
    finally:
        for sk in (cli, conn, srv):
            sk.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_wake_fd(tmp_path: Path, backend: str) -> None:
    procfs = fake_proc(tmp_path)
    r, w = os.pipe()
    try:
        sent: list[float] = []
        with Sampler(procfs, backend) as s:
            timer = threading.Timer(0.2, lambda: (sent.append(time.monotonic()), os.write(w, b"\x01")))
            timer.start()
            got, took = timed(s.idle_wait, params(0, timeout_s=10.0, wake_fd=r))
            woke = time.monotonic()
        timer.join()
        assert got.reason == "wake" and sent and woke >= sent[0] and took < 2.0
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture
def usr1() -> Iterator[list[int]]:
    got: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        signal.signal(signal.SIGUSR1, old)


@needs_cffi
def test_c_returns_on_signal(tmp_path: Path, usr1: list[int]) -> None:
    """EINTR: the handler runs as soon as the C loop returns."""
    procfs = fake_proc(tmp_path)
    main = threading.get_ident()
    timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGUSR1))
    timer.start()
    with Sampler(procfs, "cffi") as s:
        got, took = timed(s.idle_wait, params(0, timeout_s=10.0))
    timer.join()
    assert got.reason == "signal" and 0.15 < took < 2.0
    assert usr1 == [signal.SIGUSR1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_through_wakeup_fd(tmp_path: Path, backend: str, usr1: list[int]) -> None:
    """Python's signal wakeup fd ends the wait for both backends (the Python
    one retries an interrupted poll, PEP 475)."""
    procfs = fake_proc(tmp_path)
    r, w = os.pipe2(os.O_NONBLOCK)
    old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    main = threading.get_ident()
    try:
        timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGUSR1))
        timer.start()
        with Sampler(procfs, backend) as s:
            got, took = timed(s.idle_wait, params(0, timeout_s=10.0, wake_fd=r))
        timer.join()
    finally:
        signal.set_wakeup_fd(old)
        os.close(r)
        os.close(w)
    assert got.reason in ("wake", "signal") and 0.15 < took < 2.0
    assert usr1 == [signal.SIGUSR1]


@needs_cffi
def test_c_wait_releases_the_gil(tmp_path: Path) -> None:
    procfs = fake_proc(tmp_path)
    count = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal count
        while not stop.is_set():
            count += 1

    t = threading.Thread(target=spin)
    with Sampler(procfs, "cffi") as s:
        t.start()
        time.sleep(0.05)
        before = count
        s.idle_wait(params(0, timeout_s=0.3))
        during = count - before
        stop.set()
        t.join()
    assert during > 10_000  # the other thread ran all along


@pytest.mark.parametrize("backend", BACKENDS)
def test_parse_error_raises_as_read(tmp_path: Path, backend: str) -> None:
    procfs = fake_proc(tmp_path)
    with Sampler(procfs, backend) as s:
        (tmp_path / "meminfo").write_bytes(b"MemTotal: x kB\n")
        with pytest.raises(Exception) as e:
            s.idle_wait(params(0, timeout_s=1.0))
        assert type(e.value).__name__ == "ParseError"


def test_sleep_rule() -> None:
    p = params(1000, min_interval_s=0.002, max_interval_s=1.0, min_rate_kib_s=1000.0, max_rate_kib_s=1e9)
    assert idle_sleep_s(1500, p, 0.0) == 0.5  # 500 KiB at the floor rate
    assert idle_sleep_s(1500, p, 1000.0) == 0.25  # twice the measured 1000 KiB/s
    assert idle_sleep_s(10**9, p, 0.0) == 1.0  # clamped
    assert idle_sleep_s(1001, p, 0.0) == 0.002


# -- the C reader's fast paths ------------------------------------------------------------
def test_make_memsample_is_memsample() -> None:
    a = make_memsample(1, 2, 3, 4, None, True)
    b = MemSample(1, 2, 3, 4, None, True)
    assert type(a) is MemSample and a == b and hash(a) == hash(b) and repr(a) == repr(b)
    with pytest.raises(AttributeError):
        a.mem_total_kib = 5  # type: ignore[misc]


def c_parse(data: bytes, hint: Any = None) -> MemSample | None:
    assert EXT is not None
    out = EXT.ffi.new("struct pyoomd_sample *")
    rc = (EXT.lib.pyoomd_parse_meminfo(data, len(data), out) if hint is None
          else EXT.lib.pyoomd_parse_meminfo_hinted(data, len(data), hint, out))
    if rc != 0:
        return None
    return MemSample(out.mem_total, out.mem_available, out.swap_total, out.swap_free, None, not out.has_available)


KERNEL_KEYS = [b"MemTotal", b"MemFree", b"MemAvailable", b"Buffers", b"Cached", b"SwapCached", b"Active",
               b"Inactive", b"Active(anon)", b"Inactive(anon)", b"Active(file)", b"Inactive(file)", b"Unevictable",
               b"Mlocked", b"SwapTotal", b"SwapFree", b"Zswap", b"Dirty", b"AnonPages", b"Mapped", b"Shmem",
               b"KReclaimable", b"Slab", b"SReclaimable", b"SUnreclaim", b"KernelStack", b"HugePages_Total",
               b"Hugepagesize", b"DirectMap4k", b"DirectMap2M"]


@st.composite
def kernel_meminfo(draw: st.DrawFn) -> bytes:
    """Like the kernel's: each key once, in its order (some may be missing)."""
    total = draw(st.integers(1, 10**12))
    lines = []
    for key in KERNEL_KEYS:
        if key != b"MemTotal" and draw(st.integers(0, 9)) == 0:
            continue
        hi = total if key in (b"MemAvailable", b"SwapFree") else 10**12
        v = total if key == b"MemTotal" else draw(st.integers(0, hi))
        lines.append(b"%s:%s%d kB\n" % (key, b" " * draw(st.integers(1, 9)), v))
    return b"".join(lines)


@needs_cffi
def test_hinted_parse_on_fixtures() -> None:
    """Each fixture after each other one: the fast path gives the full scan's answer."""
    assert EXT is not None
    files = sorted((FIXTURES / "meminfo").glob("*.txt"))
    hint = EXT.ffi.new("struct pyoomd_meminfo_hint *")
    for a in files:
        for b in files:
            for data in (a.read_bytes(), b.read_bytes(), b.read_bytes()):
                assert c_parse(data, hint) == c_parse(data)


@needs_cffi
@fuzz(300, 1000)
@given(st.lists(kernel_meminfo(), min_size=1, max_size=4))
def test_hinted_parse_matches_full_scan(files: list[bytes]) -> None:
    assert EXT is not None
    hint = EXT.ffi.new("struct pyoomd_meminfo_hint *")
    for data in files:
        assert c_parse(data, hint) == c_parse(data)


@needs_cffi
def test_hinted_fast_path_used_on_proc() -> None:
    """/proc/meminfo (procfs) gets the fast path: same values as the full scan."""
    with open("/proc/meminfo", "rb") as f:
        data = f.read()
    assert EXT is not None
    hint = EXT.ffi.new("struct pyoomd_meminfo_hint *")
    assert c_parse(data, hint) == c_parse(data)
    assert hint.valid
    assert c_parse(data, hint) == c_parse(data)  # this time from the remembered places


@pytest.mark.parametrize("backend", BACKENDS)
def test_psi_reused_while_unchanged(tmp_path: Path, backend: str) -> None:
    procfs = fake_proc(tmp_path)
    with Sampler(procfs, backend) as s:
        a, b = s.read(), s.read()
        assert a == b
        busy = (FIXTURES / "pressure" / "busy.txt").read_bytes()
        (tmp_path / "pressure" / "memory").write_bytes(busy)
        c = s.read()
        assert c.psi != a.psi
        (tmp_path / "pressure" / "memory").write_bytes(PSI)
        assert s.read() == a
    if backend == "cffi":
        assert a.psi is b.psi  # the same bytes: not parsed again


# -- Daemon.run(): the idle wait at OK only ----------------------------------------------
def mem(avail_gib: float) -> MemSample:
    return MemSample(16 * GIB, int(avail_gib * GIB), 0, 0)



class IdleSampler:
    """idle_wait() gives the next of ``script`` and records what it was
    asked; read() gives the last sample handed out (memory stays where it
    is).  The daemon stops when idle_wait() is called with the script used
    up, or after 20 reads."""

    backend = "fake"
    has_psi = False

    def __init__(self, first: MemSample, script: list[MemSample]) -> None:
        self.first = first
        self.script = list(script)
        self.reads = 0
        self.calls: list[IdleParams] = []
        self.daemon: Daemon | None = None
        self.delay = 0.0  # how long a wait takes (real time)

    def _stop(self) -> None:
        assert self.daemon is not None
        self.daemon.state.stop = True

    def read(self) -> MemSample:
        self.reads += 1
        if self.reads > 20:
            self._stop()
        return self.first

    def idle_wait(self, p: IdleParams) -> IdleResult:
        self.calls.append(p)
        if not self.script:
            self._stop()
        else:
            self.first = self.script.pop(0)
        nxt = self.first
        time.sleep(self.delay)
        return IdleResult(nxt, "gate" if nxt.mem_available_kib <= p.gate_kib else "deadline", 0, 3,
                          self.delay / 2, nxt.mem_available_kib + 1024)


class PlainSampler(IdleSampler):
    """A fake without idle_wait (as the tests' fakes are): the old path."""

    idle_wait = None  # type: ignore[assignment]


@pytest.fixture
def quiet_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(selfprotect, "lock_memory", lambda: "skipped in tests")
    monkeypatch.setattr(selfprotect, "set_oom_score_adj", lambda procfs: "skipped in tests")
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def make_daemon(sampler: Any, sleeps: list[float] | None = None) -> tuple[Daemon, Log]:
    log = Log()
    s = settings_from_dict({"dry_run": True, "memory": {"term": "10%", "kill": "5%", "warn": "20%"},
                            "swap": {"term": "0%", "kill": "0%"}})
    if sleeps is None:
        d = Daemon(s, Procfs(FIXTURE_PROC), sampler, log)
    else:
        d = Daemon(s, Procfs(FIXTURE_PROC), sampler, log, sleep=sleeps.append)
        d.use_idle_wait = True
    sampler.daemon = d
    return d, log


def test_run_idles_at_ok_and_judges_what_it_returns(quiet_start: None) -> None:
    # 20 % of 16 GiB = 3.2 GiB: WARN; 10 % = 1.6 GiB: TERM.
    sampler = IdleSampler(mem(8), [mem(7), mem(6), mem(3), mem(9)])
    sleeps: list[float] = []
    d, _ = make_daemon(sampler, sleeps)
    d.run()
    # OK, OK, OK -> idle waits; the 3 GiB sample (WARN) is judged, then Python ticks.
    assert len(sampler.calls) == 3 and sampler.script == [mem(9)]
    assert all(p.gate_kib == d.thresholds.mem_warn_kib for p in sampler.calls)
    assert all(p.timeout_s == IDLE_HOUSEKEEPING_S for p in sampler.calls)
    assert sampler.calls[0].first_sleep_s > 0  # the tick's own pause comes first
    assert sleeps, "below WARN the loop sleeps in Python as before"
    assert d.last_sample.mem_available_kib <= d.thresholds.mem_warn_kib


def test_run_acts_on_a_sample_from_the_idle_wait(quiet_start: None) -> None:
    """A sample returned at the gate is judged by the normal tick: nothing skipped."""
    sampler = IdleSampler(mem(8), [mem(7), mem(1.0)])
    sampler.delay = 0.06
    d, log = make_daemon(sampler, [])
    d.run()
    low = [kw for ev, kw in log.events if ev == "low_memory"]
    assert low and low[0]["mem_available_kib"] == mem(1.0).mem_available_kib
    # The step before the gate feeds the fill rate (1 MiB in 30 ms).
    assert d.judge.rates.rates().mem_kib_s > 0


def test_run_without_idle_wait_keeps_the_old_path(quiet_start: None) -> None:
    sampler = PlainSampler(mem(8), [])
    sleeps: list[float] = []
    d, _ = make_daemon(sampler, sleeps)
    d.run()
    assert sampler.reads == 21 and len(sleeps) == 20 and not sampler.calls


def test_injected_sleep_means_no_idle_wait(quiet_start: None) -> None:
    sampler = IdleSampler(mem(8), [mem(7)])
    sleeps: list[float] = []
    d, _ = make_daemon(sampler, sleeps)
    d.use_idle_wait = None  # auto: an injected sleep drives time itself
    d.run()
    assert not sampler.calls and len(sleeps) == 20


def test_observer_shortens_the_idle_timeout(quiet_start: None) -> None:
    class Watchdog:
        idle_every_s = 2.5

        def on_event(self, event: str, fields: dict[str, Any]) -> None:
            pass

        def on_tick(self, sample: MemSample, decision: Any) -> None:
            pass

    sampler = IdleSampler(mem(8), [mem(7)])
    d, _ = make_daemon(sampler, [])
    d.observers.append(Watchdog())
    d.run()
    assert [p.timeout_s for p in sampler.calls] == [2.5, 2.5]


def test_psi_waiter_fd_is_polled_and_counted(quiet_start: None) -> None:
    r, w = os.pipe()
    waiter = Waiter(r, "psi-trigger test")
    sampler = IdleSampler(mem(8), [mem(7), mem(7)])
    d, _ = make_daemon(sampler, [])
    d.waiter = waiter

    def idle_wait(p: IdleParams) -> IdleResult:
        sampler.calls.append(p)
        if len(sampler.calls) == 2:
            d.state.stop = True
        return IdleResult(mem(7), "psi", select.POLLPRI, 1)

    sampler.idle_wait = idle_wait  # type: ignore[method-assign]
    d.run()
    assert sampler.calls[0].psi_fd == r and waiter.wakeups == 2
    waiter.close()
    os.close(w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_ends_a_real_idle_wait_promptly(tmp_path: Path, backend: str, quiet_start: None) -> None:
    """The real thing: real clock and sleep, a fixture far above WARN, the
    idle wait's 10 s deadline; SIGTERM must end run() at once."""
    procfs = fake_proc(tmp_path)
    log = Log()
    s = settings_from_dict({"dry_run": True})
    sampler = Sampler(procfs, backend)
    d = Daemon(s, Procfs(FIXTURE_PROC), sampler, log)
    pid = os.getpid()
    timer = threading.Timer(0.5, lambda: os.kill(pid, signal.SIGTERM))
    try:
        timer.start()
        _, took = timed(d.run)
        timer.join()
    finally:
        sampler.close()
    assert 0.4 < took < 2.0
    assert [ev for ev, _ in log.events][-1] == "shutdown"
    assert signal.set_wakeup_fd(-1) == -1  # run() put the wakeup fd back


def test_gate_is_the_highest_level_anything_needs(quiet_start: None) -> None:
    sampler = IdleSampler(mem(8), [])
    d, _ = make_daemon(sampler, [])
    th = d.thresholds
    assert d.idle_gate_kib() == th.mem_warn_kib >= th.mem_term_kib >= th.mem_kill_kib
    pressure = d.judge.pressure
    if pressure is not None:
        assert pressure.rule.gate_kib <= d.idle_gate_kib()
    assert Level.OK < Level.WARN


def test_observers_say_how_often_they_need_a_tick() -> None:
    from pyoomd.report.control import StatusObserver
    from pyoomd.report.reporters import MemoryReport
    from pyoomd.report.sdnotify import Notifier, SdNotifyObserver

    assert SdNotifyObserver(Notifier(None, watchdog_usec=30_000_000)).idle_every_s == 10.0
    assert SdNotifyObserver(Notifier(None)).idle_every_s is None  # no watchdog: no need
    assert StatusObserver(dict).idle_every_s == 10.0
    assert MemoryReport(1.0, lambda *a, **k: None).idle_every_s == 1.0


def test_pending_release_wait_keeps_python_ticks_until_its_deadline(quiet_start: None) -> None:
    sampler = IdleSampler(mem(8), [])
    d, _ = make_daemon(sampler, [])
    d.state.level = Level.OK
    assert d._can_idle()
    d.state.release = (d.clock() + 60, 0, 1)
    assert not d._can_idle()
    d.state.release = (d.clock() - 1, 0, 1)  # expired: memory came back at OK
    assert d._can_idle()
    d.state.episode.active = True
    assert not d._can_idle()
