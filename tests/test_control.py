"""The status socket: permissions, the JSON document, `pyoomd status`."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyoomd.cli.dispatch import main
from pyoomd.model import Decision, Level, MemSample, Pressure, PsiLine
from pyoomd.report.control import StatusObserver, StatusServer, format_status, query

SAMPLE = MemSample(16 << 20, 1 << 20, 0, 0, Pressure(PsiLine(7.5, 1, 1, 1), PsiLine(2.0, 1, 1, 1)))
KILL = {"pid": 4242, "comm": "fire\nfox", "uid": 1000, "signal": "SIGTERM", "dry_run": False, "oom_level": "TERM",
        "reason": "MemAvailable 1.00 GiB (6.2%) <= term 1.60 GiB, no swap", "rules": ["browser"]}


def _static() -> dict[str, Any]:
    return {"config_files": ["/etc/pyoomd/config.yaml"], "policy_files": [], "wake_mode": "poll",
            "dry_run": False, "thresholds": {"mem_term_kib": 1677721}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StatusServer]:
    obs = StatusObserver(_static)
    srv = StatusServer(str(tmp_path / "run" / "status.sock"), obs).start()
    yield srv
    srv.stop()


def test_socket_is_root_only(server: StatusServer) -> None:
    mode = os.stat(server.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(server.path)).st_mode) == 0o700


def test_document_has_config_level_sample_and_kills(server: StatusServer) -> None:
    obs = server.observer
    obs.on_tick(SAMPLE, Decision(Level.TERM, "MemAvailable low", 0.002))
    obs.on_event("kill", KILL)
    obs.on_event("victim_exited", {"pid": 4242, "ms": 12.0})
    doc = query(server.path)
    assert doc["config_files"] == ["/etc/pyoomd/config.yaml"] and doc["wake_mode"] == "poll"
    assert doc["level"] == "TERM" and doc["last_sample"]["mem_available_kib"] == 1 << 20
    assert doc["last_sample"]["psi_some_avg10"] == 7.5
    (kill,) = doc["last_kills"]
    assert kill["comm"] == "fire\nfox" and kill["outcome"] == "victim_exited" and kill["rules"] == ["browser"]
    assert "SIGTERM pid 4242 'fire\\nfox'" in format_status(doc)


def test_pyoomd_status_command(server: StatusServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.observer.on_tick(SAMPLE, Decision(Level.OK, "fine", 1.0))
    assert main(["status", "--json", "--socket", server.path]) == 0
    assert json.loads(capsys.readouterr().out)["level"] == "OK"
    assert main(["status", "--socket", server.path]) == 0
    assert "level       OK: fine" in capsys.readouterr().out


def test_status_without_a_daemon_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--socket", str(tmp_path / "none.sock")]) == 69
    assert "is pyoomd running" in capsys.readouterr().err


def test_a_stale_socket_is_replaced_but_a_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    socket.socket(socket.AF_UNIX).bind(str(path))
    srv = StatusServer(str(path), StatusObserver(_static)).start()
    assert query(str(path))["pid"] == os.getpid()
    srv.stop()
    path.write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        StatusServer(str(path), StatusObserver(_static)).start()
    assert path.read_text() == "precious"


def test_last_kills_are_bounded() -> None:
    obs = StatusObserver(_static)
    for pid in range(50):
        obs.on_event("kill", {**KILL, "pid": pid})
    assert [k["pid"] for k in obs.document()["last_kills"]] == list(range(40, 50))


def test_a_live_daemons_socket_is_not_taken_over(server: StatusServer) -> None:
    with pytest.raises(OSError, match="another pyoomd"):
        StatusServer(server.path, StatusObserver(_static)).start()
    assert query(server.path)["pid"] == os.getpid()


def test_kernel_oom_kills_are_in_the_status(server: StatusServer) -> None:
    from pyoomd.sense.kmsg import event_fields, parse_kill_line

    kill = parse_kill_line("Memory cgroup out of memory: Killed process 77 (a) (b) total-vm:9kB, anon-rss:65536kB, "
                           "file-rss:12kB, shmem-rss:0kB, UID:1000 pgtables:4kB oom_score_adj:0")
    assert kill is not None
    server.observer.on_event("kernel_oom_kill", {**event_fields(kill), "memcg": "/ci/job"})
    server.observer.on_tick(SAMPLE, Decision(Level.OK, "fine", 1.0))
    doc = query(server.path)
    assert doc["kernel_oom_kills"] == {"global": 0, "memcg": 1}
    (row,) = doc["last_kernel_oom_kills"]
    assert (row["pid"], row["comm"], row["memcg"], row["anon_rss_kib"]) == (77, "a) (b", "/ci/job", 65536)
    assert "kernel kills global 0, memcg 1" in format_status(doc)
    assert "memcg in /ci/job: pid 77 'a) (b' uid 1000, anon 65536 KiB" in format_status(doc)
