"""The kernel OOM killer's kills, from /dev/kmsg (sense/kmsg.py): the parser
on lines as this machine's kernel (6.18) wrote them, hostile COMMs, the
follower on a FIFO and a file standing in for /dev/kmsg, lost records, an
unreadable log, and the daemon's loop reporting them (event + counter)."""

from __future__ import annotations

import errno
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import FIXTURE_PROC, fake_proc
from logcapture import Log

from pyoomd.act import selfprotect
from pyoomd.daemon import Daemon
from pyoomd.sense import kmsg as kmsg_mod
from pyoomd.sense.kmsg import KmsgFollower, OomLines, apply_summary, parse_kill_line, parse_record, unescape
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.sample import Sampler
from pyoomd.settings.load import settings_from_dict
from pyoomd.settings.schema import MetricsConfig

CG = "/process_api/9d257cc866c317526f0fe6a36d9f8446/pyoomd-it-probe2964"
# Recorded here (6.18.44): a memcg OOM of a process named  a) b,(c)\ d  with
# prctl(PR_SET_NAME); /dev/kmsg escapes the backslash as \x5c.
REAL_SUMMARY = (b"6,430,502152575,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
                b"oom_memcg=" + CG.encode() + b",task_memcg=" + CG.encode()
                + b",task=a) b,(c)\\x5c d,pid=14326,uid=0\n")
REAL_KILL = (b"3,431,502152593,-;Memory cgroup out of memory: Killed process 14326 (a) b,(c)\\x5c d) "
             b"total-vm:221580kB, anon-rss:7040kB, file-rss:6788kB, shmem-rss:57856kB, UID:0 pgtables:188kB "
             b"oom_score_adj:0\n")
REAL_INVOKED = b"4,344,502148283,-;a) b,(c)\\x5c d invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n"


def kill_line(prefix: str, pid: int, comm: str, adj: int = 0) -> str:
    return (f"{prefix}: Killed process {pid} ({comm}) total-vm:4194304kB, anon-rss:3145728kB, file-rss:1024kB, "
            f"shmem-rss:0kB, UID:1000 pgtables:6200kB oom_score_adj:{adj}")


def record(seq: int, msg: str, prio: int = 3) -> bytes:
    return f"{prio},{seq},{1000 + seq},-;{msg}\n".encode()


# -- the parser ---------------------------------------------------------------------------
def test_real_memcg_kill_with_hostile_comm() -> None:
    lines = OomLines()
    for raw in (REAL_INVOKED, REAL_SUMMARY):
        rec = parse_record(raw.rstrip(b"\n"))
        assert rec is not None
        assert lines.feed(rec[1], rec[0]) is None
    seq, msg = parse_record(REAL_KILL.rstrip(b"\n"))  # type: ignore[misc]
    kill = lines.feed(msg, seq)
    assert kill is not None
    assert (kill.pid, kill.comm, kill.kind) == (14326, "a) b,(c)\\ d", "memcg")
    assert kill.memcg == CG and kill.task_memcg == CG and kill.constraint == "CONSTRAINT_MEMCG"
    assert (kill.total_vm_kib, kill.anon_rss_kib, kill.file_rss_kib, kill.shmem_rss_kib) == (221580, 7040, 6788, 57856)
    assert (kill.uid, kill.pgtables_kib, kill.oom_score_adj, kill.seq) == (0, 188, 0, 431)


def test_global_kill() -> None:
    lines = OomLines()
    lines.feed("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
               "task_memcg=/user.slice/user-1000.slice/session-2.scope,task=firefox,pid=4242,uid=1000")
    kill = lines.feed(kill_line("Out of memory", 4242, "firefox", adj=200))
    assert kill is not None and kill.kind == "global" and kill.memcg is None
    assert kill.task_memcg == "/user.slice/user-1000.slice/session-2.scope"
    assert (kill.pid, kill.comm, kill.uid, kill.oom_score_adj, kill.anon_rss_kib) == (4242, "firefox", 1000, 200,
                                                                                     3145728)
    alloc = parse_kill_line(kill_line("Out of memory (oom_kill_allocating_task)", 7, "x"))
    assert alloc is not None and alloc.kind == "global"


@pytest.mark.parametrize("comm", [
    "a) total-vm:1kB,",  # the tail's own marker inside the name
    ") (",
    "x,pid=9,uid=0",  # the summary's markers
    "task=y,pid=1",
    "Killed process 1",
    "",
    " ",
    "((()))",
])
def test_hostile_comm_cannot_mislead(comm: str) -> None:
    escaped = comm.replace("\\", "\\x5c")
    summary = (f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,"
               f"task_memcg=/a/b,task={escaped},pid=31337,uid=1000")
    lines = OomLines()
    lines.feed(summary)
    kill = lines.feed(kill_line("Memory cgroup out of memory", 31337, escaped, adj=-17))
    assert kill is not None
    assert (kill.pid, kill.comm, kill.memcg, kill.task_memcg) == (31337, comm, "/a", "/a/b")
    assert (kill.uid, kill.oom_score_adj, kill.pgtables_kib) == (1000, -17, 6200)


def test_hostile_cgroup_names() -> None:
    """A cgroup named ``x,task_memcg=`` cannot move the split: the victim's
    cgroup is at or below the one whose limit was hit."""
    oom, task = "/a,task_memcg=/z", "/a,task_memcg=/z/leaf"
    kill = parse_kill_line(kill_line("Memory cgroup out of memory", 5, "w"))
    assert kill is not None
    got = apply_summary(kill, f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg={oom},"
                              f"task_memcg={task},task=w,pid=5,uid=0")
    assert (got.memcg, got.task_memcg) == (oom, task)


def test_summary_of_another_victim_is_not_used() -> None:
    lines = OomLines()
    lines.feed("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/a,task_memcg=/a,task=w,pid=5,uid=0")
    kill = lines.feed(kill_line("Memory cgroup out of memory", 6, "w"))  # oom.group's next member: no summary
    assert kill is not None and kill.memcg is None and kill.kind == "memcg"


def test_older_kernel_line_without_uid() -> None:
    kill = parse_kill_line("Out of memory: Killed process 812 (java) total-vm:9000kB, anon-rss:800kB, "
                           "file-rss:0kB, shmem-rss:0kB")
    assert kill is not None and kill.uid is None and kill.oom_score_adj is None and kill.anon_rss_kib == 800


@pytest.mark.parametrize("msg", [
    "oom_reaper: reaped process 14326 (a), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
    "Killed process 1 (init) total-vm:1kB",  # no prefix
    "Something else: Killed process 1 (x) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:1kB",
    "Out of memory: Killed process x1 (x) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:1kB",
    "Out of memory: Killed process 1 (x) total-vm:lots, anon-rss:1kB",
    "Out of memory: Killed process 1 (x)",
    "Out of memory: Kill process 1 (x) score 900 or sacrifice child",
])
def test_not_a_kill(msg: str) -> None:
    assert parse_kill_line(msg) is None


def test_unescape() -> None:
    assert unescape("a\\x5cb\\x0a\\xc3\\xa9") == "a\\b\né"
    assert unescape("\\x") == "\\x" and unescape("\\xzz") == "\\xzz" and unescape("plain") == "plain"


def test_records() -> None:
    assert parse_record(b"6,430,502152575,-;hello") == (430, "hello")
    assert parse_record(b"6,430,502152575,-,caller=T12;hello;x") == (430, "hello;x")
    assert parse_record(b" SUBSYSTEM=memory") is None
    assert parse_record(b"no header") == (None, "no header")


# -- the follower -------------------------------------------------------------------------
class Reports:
    def __init__(self) -> None:
        self.q: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()

    def __call__(self, severity: str, event: str, fields: dict[str, Any]) -> None:
        self.q.put((severity, event, fields))

    def get(self, timeout: float = 5.0) -> tuple[str, str, dict[str, Any]]:
        return self.q.get(timeout=timeout)

    def empty_after(self, s: float) -> bool:
        time.sleep(s)
        return self.q.empty()


def test_follower_on_a_fifo(tmp_path: Path) -> None:
    """Records cut anywhere (a FIFO is a byte stream), a writer that goes
    away and comes back, user-space lines that only look like kills."""
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    got = Reports()
    f = KmsgFollower(got, str(fifo))
    assert f.open() is None
    f.start()
    try:
        w = os.open(fifo, os.O_WRONLY)
        data = REAL_INVOKED + REAL_SUMMARY + REAL_KILL
        for i in range(0, len(data), 97):
            os.write(w, data[i:i + 97])
            time.sleep(0.001)
        severity, event, fields = got.get()
        assert (severity, event) == ("info", "kernel_oom_kill")
        assert fields["pid"] == 14326 and fields["comm"] == "a) b,(c)\\ d" and fields["memcg"] == CG
        assert "memory cgroup" in fields["message"]
        # Facility user (prio >= 8): anyone who may write /dev/kmsg, not the kernel.
        os.write(w, record(500, kill_line("Out of memory", 1, "init"), prio=12))
        os.close(w)  # no writer: the follower waits for one
        assert got.empty_after(0.3)
        w = os.open(fifo, os.O_WRONLY)
        os.write(w, record(501, kill_line("Out of memory", 4242, "firefox")))
        severity, event, fields = got.get()
        assert (severity, event, fields["kind"], fields["pid"]) == ("warning", "kernel_oom_kill", "global", 4242)
        assert "pyoomd did not prevent it" in fields["message"]
        os.write(w, record(501, kill_line("Out of memory", 4242, "firefox")))  # the same sequence number again
        assert got.empty_after(0.3)
        os.close(w)
    finally:
        f.stop()
    assert f.kills == 2 and f.fd is None


def test_follower_starts_at_the_end_of_a_file(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_bytes(record(1, kill_line("Out of memory", 11, "old")))  # before start: not reported
    got = Reports()
    f = KmsgFollower(got, str(log))
    assert f.open() is None
    f.start()
    try:
        assert got.empty_after(0.3)
        with log.open("ab") as out:
            out.write(record(2, kill_line("Out of memory", 12, "new")))
        assert got.get()[2]["pid"] == 12
    finally:
        f.stop()


def test_lost_records_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """EPIPE (the ring overwrote records we had not read): reading goes on
    with the oldest left, and the gap in sequence numbers is the loss."""
    script: list[bytes | OSError] = [record(10, "x"), OSError(errno.EPIPE, "Broken pipe"),
                                     record(25, kill_line("Out of memory", 3, "c"))]

    def fake_read(fd: int, n: int) -> bytes:
        if not script:
            raise BlockingIOError
        item = script.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    got = Reports()
    f = KmsgFollower(got)
    f.fd = -1
    monkeypatch.setattr(kmsg_mod.os, "read", fake_read)
    assert f.read_available()
    f.fd = None
    events = [got.get(0.1) for _ in range(2)]
    assert events[0][1] == "kernel_log_overrun" and events[0][2]["lost_total"] == 14
    assert events[1][1] == "kernel_oom_kill" and events[1][2]["pid"] == 3


def test_unreadable_log(tmp_path: Path) -> None:
    got = Reports()
    f = KmsgFollower(got, str(tmp_path / "missing"))
    assert "No such file" in (f.open() or "")
    d = KmsgFollower(got, str(tmp_path))  # a directory opens, but reads fail: reported, thread ends
    assert d.open() is None
    d.start()
    try:
        _, event, fields = got.get()
        assert event == "kernel_log_failed" and fields["error"] and fields["kills_seen"] == 0
    finally:
        d.stop()


def test_real_dev_kmsg_opens_at_its_end() -> None:
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("/dev/kmsg is not readable here")
    got = Reports()
    f = KmsgFollower(got)
    if f.open() is not None:
        pytest.skip("/dev/kmsg cannot be opened here")
    try:
        assert f.read_available()  # nothing new since the open: EAGAIN at once
        assert f.kills == 0
    finally:
        f.stop()


# -- the daemon ---------------------------------------------------------------------------

@pytest.fixture
def quiet_start(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(selfprotect, "lock_memory", lambda: "skipped in tests")
    monkeypatch.setattr(selfprotect, "set_oom_score_adj", lambda procfs: "skipped in tests")
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_daemon_reports_a_kernel_kill_from_its_idle_wait(tmp_path: Path, quiet_start: None) -> None:
    """The real loop on a fixture far above WARN, waiting in C (idle wait,
    60 s housekeeping): a kill written to the stand-in log is logged by the
    loop within a fraction of a second, and counted by the metrics."""
    from pyoomd.report.metrics import Metrics

    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    log = Log()
    s = settings_from_dict({"dry_run": True, "kernel_log": {"path": str(fifo)}})
    sampler = Sampler(fake_proc(tmp_path / "proc"), "auto")
    d = Daemon(s, Procfs(FIXTURE_PROC), sampler, log)
    metrics = Metrics(MetricsConfig(), d.thresholds, lambda *a, **k: None)
    d.observers.append(metrics)
    seen: dict[str, float] = {}

    def writer() -> None:
        while not any(e == "startup" for _, e, _ in log.leveled):
            time.sleep(0.01)
        time.sleep(0.3)  # the loop is in its idle wait by now
        w = os.open(fifo, os.O_WRONLY)
        os.write(w, record(7, kill_line("Out of memory", 4242, "firefox")))
        seen["written"] = time.monotonic()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e == "kernel_oom_kill" for _, e, _ in log.leveled):
            time.sleep(0.005)
        seen["logged"] = time.monotonic()
        os.close(w)
        os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=writer)
    t.start()
    try:
        d.run()
    finally:
        t.join()
        sampler.close()
    startup = next(kw for _, e, kw in log.leveled if e == "startup")
    assert startup["kernel_log"] == f"following {fifo}"
    kills = [(sev, kw) for sev, e, kw in log.leveled if e == "kernel_oom_kill"]
    assert len(kills) == 1 and kills[0][0] == "warning" and kills[0][1]["pid"] == 4242
    assert seen["logged"] - seen["written"] < 1.0, seen
    assert metrics.kernel_kills.labels("global")._value.get() == 1
    assert metrics.kernel_kills.labels("memcg")._value.get() == 0
    assert d.kmsg is None  # stopped with the loop


def test_daemon_without_a_readable_log_warns_once_and_runs(tmp_path: Path, quiet_start: None) -> None:
    log = Log()
    s = settings_from_dict({"dry_run": True, "kernel_log": {"path": str(tmp_path / "none")}})
    sampler = Sampler(fake_proc(tmp_path / "proc"), "auto")
    d = Daemon(s, Procfs(FIXTURE_PROC), sampler, log)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        d.run()
    finally:
        timer.join()
        sampler.close()
    warned = [kw for _, e, kw in log.leveled if e == "kernel_log_unavailable"]
    assert len(warned) == 1 and "No such file" in warned[0]["error"]
    startup = next(kw for _, e, kw in log.leveled if e == "startup")
    assert startup["kernel_log"].startswith("unavailable:")
    assert [e for _, e, _ in log.leveled][-1] == "shutdown"


def test_kernel_log_off(tmp_path: Path, quiet_start: None) -> None:
    log = Log()
    s = settings_from_dict({"dry_run": True, "kernel_log": {"enabled": False}})
    sampler = Sampler(fake_proc(tmp_path / "proc"), "auto")
    d = Daemon(s, Procfs(FIXTURE_PROC), sampler, log)
    d.start_kernel_log()
    assert d.kmsg is None and d.kernel_log_state == "off"
    sampler.close()


def test_reload_that_turns_the_kernel_log_off_stops_the_follower(tmp_path: Path, quiet_start: None) -> None:
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    log = Log()
    s = settings_from_dict({"dry_run": True, "kernel_log": {"path": str(fifo)}})
    sampler = Sampler(fake_proc(tmp_path / "proc"), "auto")
    d = Daemon(s, Procfs(FIXTURE_PROC), sampler, log)
    try:
        d.start_kernel_log()
        assert d.kmsg is not None and d.kernel_log_state == f"following {fifo}"
        d.reloader = lambda: settings_from_dict({"dry_run": True, "kernel_log": {"enabled": False}})
        d.reload()
        assert d.kmsg is None and d.kernel_log_state == "off"
        assert any(e == "reloaded" for _, e, _ in log.leveled)
    finally:
        d.stop_kernel_log()
        sampler.close()
