"""Notifications against a real dbus-daemon session bus started here, with a
jeepney service that owns org.freedesktop.Notifications and records calls."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import bus_with_service

from pyoomd.model import Decision, Level, MemSample
from pyoomd.report.notify import Message, Notifier, find_sessions, kill_message, send_as
from pyoomd.settings.schema import NotifyConfig
from pyoomd.units import human_kib

NOBODY = 65534
KILL_FIELDS = {"pid": 4242, "comm": "firefox", "rss_kib": int(7.1 * (1 << 20)), "swap_kib": 0, "dry_run": False}


def _service(bus_path: str, record: str, ready: str, uid: int | None) -> None:  # pragma: no cover - child
    code = 1
    try:
        if uid is not None and uid != os.geteuid():
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        from jeepney import MessageType, message_bus, new_method_return
        from jeepney.io.blocking import open_dbus_connection

        conn = open_dbus_connection(f"unix:path={bus_path}")
        reply = conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.Notifications"))
        assert reply.body[0] == 1, reply.body  # primary owner
        open(ready, "w").close()
        n = 0
        while True:
            msg = conn.receive()
            if msg.header.message_type == MessageType.method_call and \
                    msg.header.fields.get(3) == "Notify":  # 3: MEMBER
                n += 1
                with open(record, "a") as f:
                    f.write(json.dumps({"body": list(msg.body), "sender_uid": uid}) + "\n")
                conn.send(new_method_return(msg, "u", (n,)))
    finally:
        os._exit(code)


@dataclass
class Bus:
    run_dir: str
    uid: int
    bus_path: str
    record: str

    def calls(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.record):
            return []
        with open(self.record) as f:
            return [json.loads(line) for line in f]


def _start_bus(uid: int) -> Iterator[Bus]:
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (Debian: apt-get install dbus-daemon)")
    # Outside pytest's 0700 tmp tree, so that another uid can reach its bus.
    run_dir = tempfile.mkdtemp(prefix="pyoomd-notify-")
    os.chmod(run_dir, 0o755)
    user_dir = os.path.join(run_dir, str(uid))
    os.mkdir(user_dir, 0o700)
    os.chown(user_dir, uid, uid) if os.geteuid() == 0 else None
    bus_path = os.path.join(user_dir, "bus")
    record, ready = os.path.join(user_dir, "calls.jsonl"), os.path.join(user_dir, "ready")
    try:
        with bus_with_service(bus_path, ready, lambda: _service(bus_path, record, ready, uid), uid):
            yield Bus(run_dir, uid, bus_path, record)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def own_bus() -> Iterator[Bus]:
    yield from _start_bus(os.geteuid())


@pytest.fixture
def nobody_bus() -> Iterator[Bus]:
    if os.geteuid() != 0:
        pytest.skip("sending to another user's bus needs root")
    yield from _start_bus(NOBODY)


def _notifier(run_dir: str, **kw: Any) -> tuple[Notifier, list[tuple[str, dict[str, Any]]]]:
    logged: list[tuple[str, dict[str, Any]]] = []
    kw.setdefault("sessions", "all")  # delivery tests; who is told is tested with a fake logind below
    cfg = NotifyConfig(enabled=True, run_user_dir=run_dir, **kw)
    return Notifier(cfg, lambda ev, **f: logged.append((ev, f))), logged


def test_message_reads_like_a_person_wrote_it() -> None:
    msg = kill_message(KILL_FIELDS)
    assert msg.body == "pyoomd killed firefox (pid 4242), 7.1 GiB, to keep the system responsive"
    assert "would have killed" in kill_message({**KILL_FIELDS, "dry_run": True}).body
    assert human_kib(512 * 1024) == "512 MiB" and human_kib(900) == "900 KiB"


def test_notify_reaches_the_session_bus_of_our_own_user(own_bus: Bus) -> None:
    notifier, logged = _notifier(own_bus.run_dir)
    assert notifier.deliver(kill_message(KILL_FIELDS)) == 1, logged
    (call,) = own_bus.calls()
    app, replaces, _icon, _summary, body, _actions, hints, expire = call["body"]
    assert (app, replaces, body, expire) == (
        "pyoomd", 0, "pyoomd killed firefox (pid 4242), 7.1 GiB, to keep the system responsive", -1)
    assert hints["urgency"] == ["y", 2]
    assert logged == [("notified", {"uid": own_bus.uid, "kind": "kill"})]


def test_root_reaches_another_users_bus_through_a_fork_that_becomes_them(nobody_bus: Bus) -> None:
    notifier, logged = _notifier(nobody_bus.run_dir)
    assert notifier.deliver(kill_message(KILL_FIELDS)) == 1, logged
    assert [c["body"][4] for c in nobody_bus.calls()] == [kill_message(KILL_FIELDS).body]
    assert os.geteuid() == 0  # the daemon itself never changed uid


def test_a_bus_nobody_answers_on_is_logged_not_raised(own_bus: Bus) -> None:
    notifier, logged = _notifier(own_bus.run_dir)
    with pytest.raises(OSError):
        send_as(own_bus.uid, own_bus.bus_path + ".missing", kill_message(KILL_FIELDS))
    os.rename(own_bus.bus_path, own_bus.bus_path + ".gone")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(own_bus.bus_path)  # a socket nobody listens on
    try:
        assert notifier.deliver(kill_message(KILL_FIELDS)) == 0
    finally:
        sock.close()
    assert logged[0][0] == "notify_failed"


def test_rate_limit_counts_what_it_drops() -> None:
    now = [100.0]
    sent: list[tuple[int, str]] = []
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(os.path.join(d, str(os.geteuid())))
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(d, str(os.geteuid()), "bus"))
        cfg = NotifyConfig(enabled=True, run_user_dir=d, min_interval=10)
        n = Notifier(cfg, lambda *a, **k: None, clock=lambda: now[0],
                     send=lambda uid, path, m: sent.append((uid, m.body)))
        msg = kill_message(KILL_FIELDS)
        assert n.deliver(msg) == 1
        now[0] += 3
        assert n.deliver(msg) == 0 and n.deliver(msg) == 0
        now[0] += 10
        assert n.deliver(msg) == 1
        s.close()
    assert sent[1][1].endswith("(2 more since the last notice)")


def test_sessions_are_sockets_owned_by_their_uid() -> None:
    with tempfile.TemporaryDirectory() as d:
        me = os.geteuid()
        for name in (str(me), "not-a-uid", str(me + 4711)):
            os.mkdir(os.path.join(d, name))
            socket.socket(socket.AF_UNIX).bind(os.path.join(d, name, "bus"))
        open(os.path.join(d, str(me + 4711), "x"), "w").close()
        # uid me+4711's "bus" is owned by us, not by it: not its bus.
        assert [(s.uid, os.path.basename(os.path.dirname(s.bus_path))) for s in find_sessions(d)] == \
            [(me, str(me))]
    assert find_sessions("/nonexistent/run/user") == []


def test_observer_never_blocks_even_when_the_bus_hangs() -> None:
    release = threading.Event()
    cfg = NotifyConfig(enabled=True, warn_low_memory=True, run_user_dir="/nonexistent")
    n = Notifier(cfg, lambda *a, **k: None)
    n.deliver = lambda m: release.wait(30)  # type: ignore[method-assign]
    n.start()
    t0 = time.monotonic()
    for _ in range(200):
        n.on_event("kill", KILL_FIELDS)
    assert time.monotonic() - t0 < 0.5
    release.set()


def test_low_memory_warning_once_per_episode() -> None:
    cfg = NotifyConfig(enabled=True, warn_low_memory=True, run_user_dir="/nonexistent")
    n = Notifier(cfg, lambda *a, **k: None)
    sample = MemSample(8 << 20, 1 << 20, 0, 0)
    for level in (Level.OK, Level.WARN, Level.WARN, Level.TERM, Level.OK, Level.WARN):
        n.on_tick(sample, Decision(level, "", 0.1))
    msgs: list[Message] = []
    while not n._queue.empty():
        msgs.append(n._queue.get_nowait())
    assert [m.kind for m in msgs] == ["warning", "warning"]
    assert "1.0 GiB" in msgs[0].body


# -- who is told: systemd-logind's active graphical sessions --------------------
LOGIND_SESSIONS = [  # (id, uid, user, seat, type, active, class)
    ("2", 1000, "ann", "seat0", "wayland", True, "user"),
    ("3", 1001, "bob", "seat0", "x11", False, "user"),    # switched away (not the active one)
    ("4", 1002, "cid", "", "tty", True, "user"),           # a text console or ssh login
    ("c1", 113, "gdm", "seat0", "x11", True, "greeter"),   # the login screen
    ("5", 1003, "dee", "", "x11", True, "user"),           # a remote desktop: still told
]


def _fake_logind(bus_path: str, ready: str) -> None:  # pragma: no cover - child
    code = 1
    try:
        from jeepney import MessageType, message_bus, new_error, new_method_return
        from jeepney.io.blocking import open_dbus_connection

        conn = open_dbus_connection(f"unix:path={bus_path}")
        assert conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.login1")).body[0] == 1
        open(ready, "w").close()
        paths = {f"/org/freedesktop/login1/session/_{sid}": row for sid, *row in LOGIND_SESSIONS}
        while True:
            msg = conn.receive()
            if msg.header.message_type != MessageType.method_call:
                continue
            member, path = msg.header.fields.get(3), msg.header.fields.get(1)
            if member == "ListSessions":
                rows = [(sid, uid, user, seat, f"/org/freedesktop/login1/session/_{sid}")
                        for sid, uid, user, seat, *_ in LOGIND_SESSIONS]
                conn.send(new_method_return(msg, "a(susso)", (rows,)))
            elif member == "GetAll" and path in paths and msg.body[0] == "org.freedesktop.login1.Session":
                uid, _user, _seat, typ, active, cls = paths[path]
                props = {"Type": ("s", typ), "Active": ("b", active), "Class": ("s", cls), "User": ("(uo)", (uid, "/"))}
                conn.send(new_method_return(msg, "a{sv}", (props,)))
            else:
                conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (str(member),)))
    finally:
        os._exit(code)


@pytest.fixture
def fake_system_bus() -> Iterator[str]:
    """A dbus-daemon standing in for the system bus, with a fake logind on it."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (Debian: apt-get install dbus-daemon)")
    d = tempfile.mkdtemp(prefix="pyoomd-logind-")
    bus_path, ready = os.path.join(d, "system_bus_socket"), os.path.join(d, "ready")
    try:
        with bus_with_service(bus_path, ready, lambda: _fake_logind(bus_path, ready)):
            yield f"unix:path={bus_path}"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_logind_names_the_users_with_an_active_graphical_session(fake_system_bus: str) -> None:
    from pyoomd.report.notify import graphical_uids

    # wayland ann and remote x11 dee; not bob (inactive), cid (tty), gdm (greeter)
    assert graphical_uids(fake_system_bus) == {1000, 1003}


def _user_buses(d: str, uids: list[int]) -> None:
    for uid in uids:
        os.mkdir(os.path.join(d, str(uid)))
        path = os.path.join(d, str(uid), "bus")
        socket.socket(socket.AF_UNIX).bind(path)
        os.chown(path, uid, uid)


@pytest.mark.skipif(os.geteuid() != 0, reason="making sockets owned by other uids needs root")
def test_only_active_graphical_users_are_told(fake_system_bus: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        _user_buses(d, [1000, 1001, 1002, 1003, 113])
        sent: list[int] = []
        n, _logged = _notifier(d, system_bus=fake_system_bus, min_interval=0.0, sessions="graphical")
        n.send = lambda uid, bus, msg: sent.append(uid)
        assert n.deliver(kill_message(KILL_FIELDS)) == 2
        assert sorted(sent) == [1000, 1003]
        # sessions: all tells every user with a session bus
        sent.clear()
        n, _ = _notifier(d, system_bus=fake_system_bus, min_interval=0.0, sessions="all")
        n.send = lambda uid, bus, msg: sent.append(uid)
        assert n.deliver(kill_message(KILL_FIELDS)) == 5 and sorted(sent) == [113, 1000, 1001, 1002, 1003]


@pytest.mark.skipif(os.geteuid() != 0, reason="making sockets owned by other uids needs root")
def test_without_logind_everyone_with_a_bus_is_told_and_it_is_said_once() -> None:
    with tempfile.TemporaryDirectory() as d:
        _user_buses(d, [1000, 1002])
        sent: list[int] = []
        n, logged = _notifier(d, system_bus=f"unix:path={d}/no-such-bus", min_interval=0.0,
                              sessions="graphical")
        n.send = lambda uid, bus, msg: sent.append(uid)
        assert n.deliver(kill_message(KILL_FIELDS)) == 2
        assert n.deliver(kill_message(KILL_FIELDS)) == 2
        assert sorted(sent) == [1000, 1000, 1002, 1002]
        fallbacks = [f for ev, f in logged if ev == "notify_sessions_fallback"]
        assert len(fallbacks) == 1 and fallbacks[0]["sessions"] == "all" and "no-such-bus" in fallbacks[0]["system_bus"]
