"""Native journal entries when stderr is the journal (issue 14): a datagram
socket bound in a temporary directory stands in for journald's, and
``$JOURNAL_STREAM`` names the file given as stderr, as systemd does."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FIXTURE_PROC

from pyoomd.report import journal, log

REPO = Path(__file__).resolve().parent.parent


def parse(datagram: bytes) -> dict[str, str]:
    """The native protocol read back: KEY=value lines, or KEY\\n + 64-bit LE length + data."""
    out: dict[str, str] = {}
    i = 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            out[k.decode()] = v.decode()
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", datagram[nl + 1:nl + 9])
            out[line.decode()] = datagram[nl + 9:nl + 9 + n].decode()
            assert datagram[nl + 9 + n:nl + 10 + n] == b"\n"
            i = nl + 10 + n
    return out


@pytest.fixture
def stand_in() -> Iterator[tuple[socket.socket, str]]:
    d = Path(os.environ.get("TMPDIR", "/tmp")) / f"pyoomd-journal-{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    path = str(d / "socket")  # AF_UNIX paths are short: not below pytest's deep tmp_path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    yield sock, path
    sock.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def as_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A file standing for the stream systemd gave us, named by JOURNAL_STREAM."""
    f = tmp_path / "stderr"
    f.touch()
    st = f.stat()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    yield f
    log.configure("json", sys.stderr)  # the next test starts from plain lines


def test_stderr_is_the_journal_only_when_device_and_inode_match(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.touch()
    st = f.stat()
    with f.open() as fh:
        assert journal.stderr_is_journal(fh.fileno(), {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journal.stderr_is_journal(fh.fileno(), {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not journal.stderr_is_journal(fh.fileno(), {})  # inherited from nobody: plain lines
        assert not journal.stderr_is_journal(fh.fileno(), {"JOURNAL_STREAM": "garbage"})


def test_a_kill_is_one_entry_with_priority_message_id_and_pyoomd_fields(
        stand_in: tuple[socket.socket, str], as_journal: Path) -> None:
    sock, path = stand_in
    with as_journal.open("w") as stream:
        log.configure("auto", stream, journal_socket=path)
        log.get_logger().warning("kill", pid=4242, comm="firefox", rss_kib=7 << 20, swap_kib=100 << 10,
                                 signal="SIGTERM", dry_run=False,
                                 reason="MemAvailable 4.1% <= 5%", candidates=[{"pid": 4242, "badness": 900}])
    entry = parse(sock.recv(1 << 16))
    assert entry["PRIORITY"] == "4"  # warning
    assert entry["MESSAGE_ID"] == journal.MESSAGE_IDS["kill"]
    assert entry["SYSLOG_IDENTIFIER"] == "pyoomd"
    assert entry["MESSAGE"] == "Killed firefox (pid 4242, 7.1 GiB) to relieve memory: MemAvailable 4.1% <= 5%"
    assert entry["PYOOMD_EVENT"] == "kill" and entry["PYOOMD_LEVEL"] == "warning"
    assert entry["PYOOMD_PID"] == "4242" and entry["PYOOMD_COMM"] == "firefox"
    assert entry["PYOOMD_CANDIDATES"] == '[{"pid": 4242, "badness": 900}]'
    assert "PYOOMD_TIMESTAMP" not in entry  # the journal stamps entries itself
    assert as_journal.read_text() == ""  # nothing on the stream


def test_levels_map_to_syslog_priorities_and_other_events_get_no_message_id(
        stand_in: tuple[socket.socket, str], as_journal: Path) -> None:
    sock, path = stand_in
    with as_journal.open("w") as stream:
        log.configure("auto", stream, journal_socket=path)
        lg = log.get_logger()
        lg.info("startup", pid=1)
        lg.error("reload_failed", error="/etc/pyoomd/config.yaml:3: bad")
        lg.debug("tick")
    startup, failed, tick = (parse(sock.recv(1 << 16)) for _ in range(3))
    assert startup["PRIORITY"] == "6" and "MESSAGE_ID" not in startup and startup["MESSAGE"] == "startup pid=1"
    assert failed["PRIORITY"] == "3" and failed["MESSAGE_ID"] == journal.MESSAGE_IDS["reload_failed"]
    assert "config.yaml:3" in failed["MESSAGE"]
    assert tick["PRIORITY"] == "7"


def test_a_hostile_value_with_newlines_stays_one_field(stand_in: tuple[socket.socket, str],
                                                       as_journal: Path) -> None:
    sock, path = stand_in
    forged = "x\nPRIORITY=0\nMESSAGE_ID=00000000000000000000000000000000"
    with as_journal.open("w") as stream:
        log.configure("auto", stream, journal_socket=path)
        log.get_logger().warning("kill", pid=7, comm=forged, rss_kib=1, swap_kib=0, reason="r")
    entry = parse(sock.recv(1 << 16))
    assert entry["PYOOMD_COMM"] == forged  # the binary form: the newlines are data, not fields
    assert entry["PRIORITY"] == "4" and entry["MESSAGE_ID"] == journal.MESSAGE_IDS["kill"]


def test_without_the_journal_socket_the_line_goes_to_stderr(tmp_path: Path, as_journal: Path) -> None:
    with as_journal.open("w") as stream:
        log.configure("auto", stream, journal_socket=str(tmp_path / "nobody-listens"))
        log.get_logger().warning("kill", pid=7, comm="c", rss_kib=1, swap_kib=0, reason="r")
    assert '"event": "kill"' in as_journal.read_text()  # nothing lost


def test_the_real_daemon_writes_native_entries_under_a_journal_stand_in(
        stand_in: tuple[socket.socket, str], tmp_path: Path) -> None:
    sock, path = stand_in
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"psi: {{wakeup: {{enabled: false}}}}\nstatus: {{socket: {tmp_path / 's.sock'}}}\n"
                   f"policy_dirs: [{REPO / 'policies'}]\n")
    cfg.chmod(0o644)
    err = tmp_path / "stderr"
    err.touch()
    st = err.stat()
    env = {k: v for k, v in os.environ.items() if k != "PYOOMD_READER"} | {
        "PYTHONPATH": str(REPO), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "PYOOMD_JOURNAL_SOCKET": path}
    with err.open("w") as f:
        p = subprocess.Popen([sys.executable, "-m", "pyoomd", "--procfs", FIXTURE_PROC, "run", "--dry-run",
                              "--config", str(cfg)], stderr=f, env=env, cwd="/")
    try:
        seen = []
        while not any(e.get("PYOOMD_EVENT") == "startup" for e in seen):
            seen.append(parse(sock.recv(1 << 16)))
    finally:
        p.terminate()
        p.wait(timeout=20)
    startup = next(e for e in seen if e.get("PYOOMD_EVENT") == "startup")
    assert startup["PRIORITY"] == "6" and startup["SYSLOG_IDENTIFIER"] == "pyoomd"
    assert startup["PYOOMD_DRY_RUN"] == "true"
    assert '"event": "startup"' not in err.read_text()


def test_the_readme_lists_every_message_id() -> None:
    text = (REPO / "README.md").read_text()
    for event, mid in journal.MESSAGE_IDS.items():
        assert f"| {mid} |" in text, event
    assert len(set(journal.MESSAGE_IDS.values())) == len(journal.MESSAGE_IDS)
