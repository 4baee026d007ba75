"""LowMemoryWarning on a real dbus-daemon standing in for the system bus:
a raw match-rule listener hears the levels low-memory-monitor uses (50 at
WARN, 100 at TERM, 255 at KILL), each at most once per min_interval;
GLib's GMemoryMonitor (python3-gi, /usr/bin/python3) reports it; another
owner of the name keeps pyoomd silent; the shipped D-Bus policy lets root
(only) own the name on a bus run with the system bus's own rules."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_bus

from pyoomd.model import Decision, Level, MemSample
from pyoomd.report.lowmem import NAME, LowMemoryMonitor, socket_missing

REPO = Path(__file__).resolve().parent.parent
POLICY_FILE = REPO / "packaging" / "dbus" / "pyoomd-lowmemory.conf"
SAMPLE = MemSample(8 << 20, 1 << 20, 0, 0)


@contextlib.contextmanager
def dbus(config: str | None = None) -> Iterator[str]:
    """A dbus-daemon of our own (session rules, or ``config``); its address."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (Debian: apt-get install dbus-daemon)")
    d = tempfile.mkdtemp(prefix="pyoomd-lowmem-")
    os.chmod(d, 0o755)
    path = os.path.join(d, "system_bus_socket")
    argv = ["dbus-daemon", "--nofork", "--nopidfile", f"--address=unix:path={path}"]
    if config is None:
        argv.insert(1, "--session")
    else:
        cfg = os.path.join(d, "bus.conf")
        Path(cfg).write_text(config)
        argv.insert(1, f"--config-file={cfg}")
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_bus(lambda: os.path.exists(path), p)
        yield f"unix:path={path}"
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


class Listener(threading.Thread):
    """A raw D-Bus match rule on LowMemoryWarning: (sender, level) heard."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        from jeepney import MatchRule, message_bus
        from jeepney.io.blocking import open_dbus_connection

        self.conn = open_dbus_connection(address)
        self.rule = MatchRule(type="signal", interface="org.freedesktop.LowMemoryMonitor",
                              member="LowMemoryWarning", path="/org/freedesktop/LowMemoryMonitor")
        self.conn.send_and_get_reply(message_bus.AddMatch(self.rule))
        self.heard: list[tuple[str, int, str]] = []

    def run(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                msg = self.conn.receive()
                if self.rule.matches(msg):
                    self.heard.append((msg.header.fields[7], msg.body[0], msg.header.fields.get(8)))  # 7: SENDER, 8: SIGNATURE

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[str, int, str]]:
        deadline = time.monotonic() + timeout
        while len(self.heard) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # nothing more should come
        return list(self.heard)


def monitor(address: str, min_interval: float = 15.0, clock: Any = time.monotonic,
            ) -> tuple[LowMemoryMonitor, list[tuple[str, str, dict[str, Any]]]]:
    logged: list[tuple[str, str, dict[str, Any]]] = []
    m = LowMemoryMonitor(address, min_interval, lambda sev, ev, **kw: logged.append((sev, ev, kw)), clock=clock)
    m.start()
    assert m.ready.wait(5)
    return m, logged


def tick(m: LowMemoryMonitor, level: Level) -> None:
    m.on_tick(SAMPLE, Decision(level, "test", 0.01))


def _owner(address: str) -> str:
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    with open_dbus_connection(address) as c:
        dbus_ = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus", interface="org.freedesktop.DBus")
        return str(c.send_and_get_reply(new_method_call(dbus_, "GetNameOwner", "s", (NAME,))).body[0])


def test_a_listener_hears_50_at_warn_100_at_term_255_at_kill_from_the_name_owner() -> None:
    with dbus() as address:
        listener = Listener(address)
        listener.start()
        m, logged = monitor(address)
        try:
            assert m.active and logged[0][1] == "low_memory_monitor_started", logged
            owner = _owner(address)
            for level in (Level.OK, Level.WARN, Level.TERM, Level.KILL):
                tick(m, level)
            heard = listener.wait(3)
            assert heard == [(owner, 50, "y"), (owner, 100, "y"), (owner, 255, "y")]
            assert [kw["lmm_level"] for _, ev, kw in logged if ev == "low_memory_warning"] == [50, 100, 255]
        finally:
            m.stop()


def test_each_level_at_most_once_per_min_interval_and_only_on_the_way_down() -> None:
    now = [100.0]
    with dbus() as address:
        listener = Listener(address)
        listener.start()
        m, _ = monitor(address, min_interval=15.0, clock=lambda: now[0])
        try:
            for level in (Level.WARN, Level.WARN, Level.WARN):  # staying at WARN: once
                tick(m, level)
            tick(m, Level.OK)
            now[0] += 5
            tick(m, Level.WARN)  # again within 15 s: not sent
            tick(m, Level.TERM)
            tick(m, Level.WARN)
            tick(m, Level.TERM)  # TERM again within 15 s: not sent
            now[0] += 16
            tick(m, Level.OK)
            tick(m, Level.WARN)  # 21 s after the first: sent
            assert [lv for _, lv, _ in listener.wait(3)] == [50, 100, 50]
        finally:
            m.stop()


def test_another_owner_keeps_pyoomd_silent_and_it_says_so() -> None:
    from jeepney import message_bus
    from jeepney.io.blocking import open_dbus_connection

    with dbus() as address, open_dbus_connection(address) as lmm:
        assert lmm.send_and_get_reply(message_bus.RequestName(NAME)).body[0] == 1  # "low-memory-monitor"
        listener = Listener(address)
        listener.start()
        m, logged = monitor(address)
        try:
            assert not m.active
            assert [(ev, kw["owner"]) for _, ev, kw in logged] == [("low_memory_monitor_present", lmm.unique_name)]
            tick(m, Level.TERM)
            assert listener.wait(1, timeout=0.5) == []
        finally:
            m.stop()


def test_no_system_bus_is_said_once_and_is_harmless(tmp_path: Path) -> None:
    address = f"unix:path={tmp_path}/none"
    assert socket_missing(address) == f"{tmp_path}/none"
    m, logged = monitor(address)
    assert not m.active and [ev for _, ev, _ in logged] == ["low_memory_monitor_unavailable"]
    tick(m, Level.TERM)  # harmless
    m.stop()


GMM_PROGRAM = """
import sys
from gi.repository import Gio, GLib
m = Gio.MemoryMonitor.dup_default()
print("impl", type(m).__gtype__.name, flush=True)
m.connect("low-memory-warning", lambda mon, level: print("warning", int(level), flush=True))
GLib.timeout_add(300, lambda: (print("ready", flush=True), False)[1])
GLib.timeout_add(15000, GLib.MainLoop.quit, loop := GLib.MainLoop())
loop.run()
"""


def _system_python_gi() -> str | None:
    py = "/usr/bin/python3"
    if not os.access(py, os.X_OK):
        return None
    r = subprocess.run([py, "-c", "from gi.repository import Gio; Gio.MemoryMonitor"], capture_output=True,
                       check=False)
    return py if r.returncode == 0 else None


def test_glibs_gmemorymonitor_reports_the_warning() -> None:
    py = _system_python_gi()
    if py is None:
        pytest.skip("python3-gi is not installed for /usr/bin/python3 (Debian: apt-get install python3-gi)")
    with dbus() as address:
        m, _ = monitor(address)
        env = {"PATH": "/usr/bin:/bin", "DBUS_SYSTEM_BUS_ADDRESS": address, "GIO_USE_MEMORY_MONITOR": "dbus"}
        p = subprocess.Popen([py, "-c", GMM_PROGRAM], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert p.stdout is not None
            lines = [p.stdout.readline().strip(), p.stdout.readline().strip()]
            assert lines == ["impl GMemoryMonitorDBus", "ready"], lines
            tick(m, Level.WARN)
            tick(m, Level.TERM)
            got = [p.stdout.readline().strip(), p.stdout.readline().strip()]
            # GLib's GMemoryMonitorWarningLevel: LOW 50, MEDIUM 100 (CRITICAL 255)
            assert got == ["warning 50", "warning 100"], got
        finally:
            p.kill()
            p.wait()
            m.stop()


def _system_rules_with_our_policy() -> str:
    """The system bus's own configuration (deny own="*" by default), with
    only our policy file included."""
    text = Path("/usr/share/dbus-1/system.conf").read_text()
    import re

    text = re.sub(r"<listen>.*?</listen>", "<listen>unix:tmpdir=/tmp</listen>", text)  # --address wins
    text = re.sub(r"<includedir>.*?</includedir>", "", text)
    text = re.sub(r"<include [^>]*>.*?</include>", "", text)
    text = re.sub(r"<user>.*?</user>", "", text)
    text = re.sub(r"<fork/>|<pidfile>.*?</pidfile>|<servicehelper>.*?</servicehelper>", "", text)
    return text.replace("</busconfig>", f"<include>{POLICY_FILE}</include>\n</busconfig>")


@pytest.mark.skipif(os.geteuid() != 0, reason="the policy lets root own the name: the test needs root")
@pytest.mark.skipif(not os.path.exists("/usr/share/dbus-1/system.conf"), reason="no system bus configuration")
def test_the_shipped_dbus_policy_lets_root_and_nobody_else_own_the_name() -> None:
    from jeepney import message_bus
    from jeepney.io.blocking import open_dbus_connection

    with dbus(_system_rules_with_our_policy()) as address:
        m, logged = monitor(address)
        try:
            assert m.active, logged
        finally:
            m.stop()
        time.sleep(0.2)
        r = subprocess.run(["dbus-send", f"--bus={address}", "--print-reply", "--dest=org.freedesktop.DBus",
                            "/org/freedesktop/DBus", "org.freedesktop.DBus.RequestName", f"string:{NAME}",
                            "uint32:0"], capture_output=True, text=True, timeout=20, user=65534, group=65534,
                           extra_groups=[], check=False)
        assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr, (r.stdout, r.stderr)
        with open_dbus_connection(address) as c:  # root again: allowed
            assert c.send_and_get_reply(message_bus.RequestName(NAME)).body[0] == 1
