"""sd_notify client and daemon observer, against a real AF_UNIX datagram socket."""

from __future__ import annotations

import itertools
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FIXTURE_PROC
from logcapture import Log

from pyoomd.act import selfprotect
from pyoomd.daemon import Daemon
from pyoomd.model import Decision, Level, MemSample
from pyoomd.report.sdnotify import (
    Notifier,
    SdNotifyObserver,
    observer_for,
    socket_address,
    status_text,
)
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.sample import Sampler
from pyoomd.settings.load import load_config
from pyoomd.settings.schema import Settings

GIB = 1024 * 1024


class Listener:
    """The service manager's end: a bound datagram socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0)

    def messages(self) -> list[dict[str, str]]:
        out = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Listener, str]]:
    path = str(tmp_path / "notify")
    lst = Listener(path)
    yield lst, path
    lst.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sample(avail_gib: float = 8.0, total_gib: float = 16.0, swap_total: int = 0) -> MemSample:
    return MemSample(int(total_gib * GIB), int(avail_gib * GIB), swap_total, swap_total)


def decision(level: Level = Level.OK) -> Decision:
    return Decision(level, "test", 1.0)


def test_socket_address_path_and_abstract() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract/name") == "\0abstract/name"
    assert socket_address("") is None
    assert socket_address("relative") is None
    assert socket_address("vsock:2:1234") is None


def test_from_env_reads_and_unsets(listener: tuple[Listener, str]) -> None:
    lst, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid()), "KEEP": "1"}
    n = Notifier.from_env(env)
    assert n.enabled and n.watchdog_usec == 20_000_000
    assert env == {"KEEP": "1"}  # hooks we start must not inherit them
    assert n.send("READY=1", "STATUS=hello")
    assert lst.messages() == [{"READY": "1", "STATUS": "hello"}]


def test_watchdog_for_another_pid_is_ignored(listener: tuple[Listener, str]) -> None:
    _, path = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_usec == 0
    n2 = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "junk"})
    assert n2.watchdog_usec == 0


def test_no_socket_is_a_silent_noop() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.send("READY=1") is False
    assert observer_for(Settings(), sample(), environ={}) is None


def test_abstract_socket() -> None:
    name = f"pyoomd-test-{os.getpid()}"
    lst = Listener("\0" + name)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.send("READY=1")
        assert lst.messages() == [{"READY": "1"}]
    finally:
        lst.close()


def test_send_never_raises_when_manager_is_gone(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody-listens"))
    assert n.send("WATCHDOG=1") is False
    assert n.failed == 1


def test_newline_in_value_cannot_inject_an_assignment(listener: tuple[Listener, str]) -> None:
    lst, path = listener
    n = Notifier(path)
    n.send("STATUS=last kill: evil\nREADY=1")
    assert lst.messages() == [{"STATUS": "last kill: evil READY=1"}]


def test_observer_ready_watchdog_status_stopping(listener: tuple[Listener, str]) -> None:
    lst, path = listener
    clock = Clock()
    obs = SdNotifyObserver(Notifier(path, watchdog_usec=10_000_000), clock=clock, status_every_s=5.0)
    obs.prime(sample(8))
    obs.on_event("startup", {"dry_run": False})
    (ready,) = lst.messages()
    assert ready["READY"] == "1" and ready["WATCHDOG"] == "1"
    assert ready["STATUS"].startswith("OK: MemAvailable 8.0 GiB (50.0%)")

    clock.t += 1.0
    obs.on_tick(sample(8), decision())
    assert lst.messages() == []  # nothing new: no ping due, same level, status fresh

    clock.t += 4.5  # 5.5 s after READY: watchdog (every 5 s) and status refresh
    obs.on_tick(sample(7), decision())
    (m,) = lst.messages()
    assert m["WATCHDOG"] == "1" and "7.0 GiB" in m["STATUS"]

    clock.t += 0.01  # a level change is shown at once, not rate limited
    obs.on_tick(sample(1), decision(Level.TERM))
    (m,) = lst.messages()
    assert "WATCHDOG" not in m and m["STATUS"].startswith("TERM: MemAvailable 1.0 GiB")

    obs.on_event("kill", {"comm": "hog", "pid": 42, "signal": "SIGTERM", "dry_run": True})
    clock.t += 0.01
    obs.on_tick(sample(1), decision(Level.TERM))
    (m,) = lst.messages()
    assert "last kill: hog (pid 42, SIGTERM) [dry-run]" in m["STATUS"]

    obs.on_event("kill", {"comm": "a\nSTOPPING=1\x1b[2J", "pid": 43, "signal": "SIGTERM"})
    clock.t += 0.01
    obs.on_tick(sample(1), decision(Level.TERM))
    (m,) = lst.messages()  # one STATUS=, no forged assignment, no raw ESC for systemctl to print
    assert set(m) == {"STATUS"} and "last kill: a\\x0aSTOPPING=1\\x1b[2J (pid 43" in m["STATUS"]

    obs.on_event("shutdown", {})
    assert lst.messages() == [{"STOPPING": "1", "STATUS": "stopping"}]


def test_status_at_most_every_few_seconds(listener: tuple[Listener, str]) -> None:
    lst, path = listener
    clock = Clock()
    obs = SdNotifyObserver(Notifier(path), clock=clock, status_every_s=5.0)
    obs.prime(sample())
    obs.on_event("startup", {})
    lst.messages()
    for _ in range(1000):  # a 2 ms loop for 2 s at one level
        clock.t += 0.002
        obs.on_tick(sample(), decision())
    assert lst.messages() == []
    clock.t += 3.1
    obs.on_tick(sample(), decision())
    assert len(lst.messages()) == 1


def test_watchdog_is_raised_when_a_kill_outlasts_it(listener: tuple[Listener, str]) -> None:
    lst, path = listener
    obs = SdNotifyObserver(Notifier(path, watchdog_usec=10_000_000), clock=Clock(), max_tick_gap_s=9.0)
    obs.prime(sample())
    obs.on_event("startup", {})
    (m,) = lst.messages()
    assert int(m["WATCHDOG_USEC"]) == 20_000_000  # 2 * 9 s + 2 s margin
    # a gap the watchdog already covers changes nothing
    obs2 = SdNotifyObserver(Notifier(path, watchdog_usec=30_000_000), clock=Clock(), max_tick_gap_s=9.0)
    obs2.prime(sample())
    obs2.on_event("startup", {})
    (m,) = lst.messages()
    assert "WATCHDOG_USEC" not in m


def test_reload_messages(listener: tuple[Listener, str]) -> None:
    lst, path = listener
    obs = SdNotifyObserver(Notifier(path), clock=Clock())
    obs.prime(sample())
    obs.on_event("startup", {})
    lst.messages()
    obs.on_event("reloading", {})
    obs.on_event("reload_failed", {"error": "bad"})
    obs.on_event("reloading", {})
    obs.on_event("reloaded", {"dry_run": True})
    m = lst.messages()
    assert [("RELOADING" in x, "READY" in x) for x in m] == [(True, False), (False, True)] * 2
    assert int(m[0]["MONOTONIC_USEC"]) > 0
    assert m[1]["STATUS"].startswith("reload failed")
    assert "dry-run" in m[3]["STATUS"]


def test_status_text_swap() -> None:
    s = MemSample(16 * GIB, 512 * 1024, 4 * GIB, GIB)
    assert status_text(Level.WARN, s) == "WARN: MemAvailable 512 MiB (3.1%), SwapFree 1.0 GiB (25.0%)"


def test_daemon_loop_notifies_and_reloads(listener: tuple[Listener, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Daemon, on the fixture /proc: READY at start, WATCHDOG from the
    loop, RELOADING/READY on SIGHUP, STOPPING at the end."""
    lst, path = listener
    monkeypatch.setattr(selfprotect, "lock_memory", lambda: "skipped in tests")
    monkeypatch.setattr(selfprotect, "set_oom_score_adj", lambda procfs: "skipped in tests")
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    cfg = tmp_path / "config.yaml"
    conf = ("memory: {{term: {0}%, kill: 1%, warn: {0}%}}\nswap: {{term: 0%, kill: 0%}}\n"
            "kill: {{grace: 1s, kill_timeout: 1s}}\ndry_run: true\n")
    cfg.write_text(conf.format(1))
    settings = load_config(str(cfg))
    procfs = Procfs(FIXTURE_PROC)
    sampler = Sampler(procfs, "python")
    clock = Clock()
    ticks = []

    def sleep(s: float) -> None:
        ticks.append(s)
        clock.t += 6.0
        if len(ticks) == 2:
            cfg.write_text(conf.format(2))
            os.kill(os.getpid(), signal.SIGHUP)
        if len(ticks) == 4:
            d.state.stop = True

    d = Daemon(settings, procfs, sampler, Log(), clock=clock, sleep=sleep)
    d.reloader = lambda: load_config(str(cfg))
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}
    obs = observer_for(settings, d.last_sample, environ=env)
    assert obs is not None
    obs.clock = clock
    d.observers.append(obs)
    try:
        d.run()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    msgs = lst.messages()
    keys = [sorted(k for k in m if k != "STATUS") for m in msgs]
    assert "READY" in keys[0]
    assert sum("WATCHDOG" in k for k in keys) >= 4  # startup + every 6 s tick
    assert ["MONOTONIC_USEC", "RELOADING"] in keys
    i = keys.index(["MONOTONIC_USEC", "RELOADING"])
    # the loop ticks on while the reload runs (in a thread): watchdog pings
    # may come between; the next state change is READY
    assert next(k for k in keys[i + 1:] if k != ["WATCHDOG"]) == ["READY"]
    assert keys[-1] == ["STOPPING"]
    assert d.settings.memory.term.pct == 2.0  # the SIGHUP re-read the file


def test_daemon_reload_keeps_old_config_on_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("kill: {grace: 3s}\n")
    procfs = Procfs(FIXTURE_PROC)
    d = Daemon(load_config(str(cfg)), procfs, Sampler(procfs, "python"), Log())
    events: list[str] = []
    d.observers.append(_Recorder(events))
    cfg.write_text("kill: {grace: nonsense}\n")
    d.reloader = lambda: load_config(str(cfg))
    d.state.reload = True
    d.reload()
    assert events == ["reloading", "reload_failed"] and d.settings.kill.grace == 3.0
    cfg.write_text("kill: {grace: 7s}\n")
    d.reload()
    assert events[-1] == "reloaded" and d.settings.kill.grace == 7.0
    d.reloader = None
    d.reload()
    assert events[-1] == "reload_unsupported"


class _Recorder:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def on_event(self, event: str, fields: dict[str, object]) -> None:
        self.events.append(event)

    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        pass


@pytest.mark.parametrize("reader", ["cffi", "python"])
def test_the_idle_wait_pings_the_watchdog_without_python_ticks(listener: tuple[Listener, str], tmp_path: Path,
                                                                reader: str) -> None:
    """The real `python -m pyoomd run` (dry run, fixture /proc, memory far
    above WARN): the loop waits in the reader for up to a minute, and the
    watchdog is still pinged every WatchdogSec/2, from inside that wait."""
    import subprocess
    import sys
    import time

    lst, path = listener
    cfg = tmp_path / "config.yaml"
    cfg.write_text("kill: {grace: 100ms, kill_timeout: 100ms}\nstatus: {socket: null}\npsi: {wakeup: {enabled: false}}\n")
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo), "PYOOMD_READER": reader, "NOTIFY_SOCKET": path,
           "WATCHDOG_USEC": "4000000"}
    err = tmp_path / "stderr"
    with err.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "pyoomd", "--procfs", FIXTURE_PROC, "run", "--dry-run",
                                 "--log-format", "json", "--config", str(cfg)], stderr=f, env=env, cwd="/")
    got: list[tuple[float, dict[str, str]]] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum("WATCHDOG" in m for _, m in got) < 4:
            time.sleep(0.05)
            got += [(time.monotonic(), m) for m in lst.messages()]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err.read_text()[-2000:]
    assert f'"reader": "{reader}"' in err.read_text()
    pings = [t for t, m in got if m.get("WATCHDOG") == "1"]
    assert len(pings) >= 4, (got, err.read_text()[-2000:])
    # every half of the watchdog timeout (4 s, or what the daemon raised it
    # to for its longest gap between ticks), at most one idle sample
    # interval (1 s) late
    raised = [int(m["WATCHDOG_USEC"]) for _, m in got if "WATCHDOG_USEC" in m]
    half = (raised[-1] if raised else 4_000_000) / 2e6
    gaps = [b - a for a, b in itertools.pairwise(pings[1:])]
    assert all(half - 0.2 <= g <= half + 1.2 for g in gaps), (gaps, half)
    # STATUS rides on Python's ticks: the idle wait kept them away
    assert sum("STATUS" in m for _, m in got) <= 2, got
