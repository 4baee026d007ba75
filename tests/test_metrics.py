"""Metrics: scrape the real HTTP endpoint on 127.0.0.1 (an ephemeral port),
and read the node_exporter textfile."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyoomd.model import Decision, Level, MemSample, Pressure, PsiLine
from pyoomd.report.metrics import Metrics, parse_listen, reason_label, textfile_dir_problem
from pyoomd.settings.amounts import Thresholds
from pyoomd.settings.load import validate
from pyoomd.settings.schema import MetricsConfig

TH = Thresholds(mem_warn_kib=4 << 20, mem_term_kib=2 << 20, mem_kill_kib=1 << 20,
                swap_term_kib=1 << 20, swap_kill_kib=1 << 19)
SAMPLE = MemSample(16 << 20, 3 << 20, 8 << 20, 5 << 20,
                   Pressure(PsiLine(12.5, 3.0, 1.0, 100), PsiLine(4.25, 1.0, 0.5, 50)))
KILL = {"pid": 4242, "comm": "firefox", "uid": 1000, "signal": "SIGTERM", "dry_run": False,
        "oom_level": "TERM", "reason": "MemAvailable 1.9 GiB (12%) <= term 2.00 GiB, SwapFree ..."}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _drive(m: Metrics) -> None:
    m.on_tick(SAMPLE, Decision(Level.WARN, "", 0.01))
    m.on_event("kill", KILL)
    m.on_event("escalate", {"pid": 4242})
    m.on_event("soft_action", {"pid": 9, "action": "restart-unit", "outcome": "recovered"})
    m.on_event("kill", {**KILL, "pid": 7, "comm": "hog", "dry_run": True, "oom_level": "KILL"})


@pytest.fixture
def served() -> Any:
    ticks = iter([0.00002, 0.5])
    m = Metrics(MetricsConfig(listen="127.0.0.1:0"), TH, lambda *a, **k: None,
                last_tick_s=lambda: next(ticks, None)).start()
    yield m
    m.stop()


def test_scrape_over_http_on_loopback(served: Metrics) -> None:
    _drive(served)
    served.on_tick(SAMPLE, Decision(Level.TERM, "", 0.01))
    assert served.port
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    got = _samples(text)
    assert got[("pyoomd_mem_available_bytes", ())] == 3 << 30
    assert got[("pyoomd_swap_free_bytes", ())] == 5 << 30
    assert got[("pyoomd_psi_some_avg10", ())] == 12.5
    assert got[("pyoomd_psi_full_avg10", ())] == 4.25
    assert got[("pyoomd_level", ())] == 2
    assert got[("pyoomd_kills_total", (("reason", "memory_term"), ("signal", "SIGTERM")))] == 1
    assert got[("pyoomd_dry_run_kills_total", (("reason", "memory_kill"),))] == 1
    assert got[("pyoomd_escalations_total", ())] == 1
    assert got[("pyoomd_soft_actions_total", (("action", "restart-unit"), ("outcome", "recovered")))] == 1
    victim = [k for k in got if k[0] == "pyoomd_last_victim_info"]
    assert dict(victim[0][1])["comm"] == "hog" and dict(victim[0][1])["dry_run"] == "true"
    assert got[("pyoomd_tick_duration_seconds_count", ())] == 2
    assert got[("pyoomd_tick_duration_seconds_bucket", (("le", "2.5e-05"),))] == 1
    assert got[("pyoomd_threshold_bytes", (("level", "term"), ("resource", "memory")))] == 2 << 30
    assert ("process_resident_memory_bytes", ()) in got


def test_textfile_for_node_exporter(tmp_path: Path) -> None:
    path = tmp_path / "pyoomd.prom"
    m = Metrics(MetricsConfig(textfile=str(path)), TH, lambda *a, **k: None)
    _drive(m)
    m.write_textfile()
    got = _samples(path.read_text())
    assert got[("pyoomd_kills_total", (("reason", "memory_term"), ("signal", "SIGTERM")))] == 1
    assert not list(tmp_path.glob("*.tmp*"))  # written to a temp file and renamed


def test_textfile_error_is_logged(tmp_path: Path) -> None:
    logged: list[str] = []
    m = Metrics(MetricsConfig(textfile=str(tmp_path / "missing" / "x.prom")), TH, lambda ev, **k: logged.append(ev))
    m.write_textfile()
    assert logged == ["metrics_textfile_failed"]


def test_reason_label_is_bounded() -> None:
    assert reason_label(KILL) == "memory_term"
    assert reason_label({"reason": "PSI full avg10 40 > 20 for 5s", "oom_level": "KILL"}) == "psi_kill"
    assert parse_listen("[::1]:9101") == ("::1", 9101)


def test_config_rejects_a_listen_address_without_port() -> None:
    with pytest.raises(ValueError):
        validate(MetricsConfig, {"listen": "127.0.0.1"})


def test_prometheus_client_is_not_imported_without_metrics() -> None:
    code = ("import sys, pyoomd.daemon, pyoomd.cli.commands, pyoomd.cli.rank, pyoomd.cli.explain, "
            "pyoomd.cli.watch, pyoomd.cli.traces, pyoomd.report.metrics; "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_kills_per_episode_are_recorded() -> None:
    from pyoomd.report.metrics import Metrics
    from pyoomd.settings.amounts import Thresholds
    from pyoomd.settings.schema import MetricsConfig

    m = Metrics(MetricsConfig(), Thresholds(4 << 20, 2 << 20, 1 << 20, 0, 0), lambda *a, **k: None)
    m.on_event("kill", {"pid": 1, "comm": "a", "signal": "SIGTERM", "dry_run": False, "episode_kills": 1})
    m.on_event("kill", {"pid": 2, "comm": "b", "signal": "SIGTERM", "dry_run": False, "episode_kills": 2})
    assert m.registry.get_sample_value("pyoomd_current_episode_kills") == 2
    m.on_event("memory_recovered", {"kills": 2})
    assert m.registry.get_sample_value("pyoomd_current_episode_kills") == 0
    assert m.registry.get_sample_value("pyoomd_episode_kills_bucket", {"le": "1.0"}) == 0
    assert m.registry.get_sample_value("pyoomd_episode_kills_bucket", {"le": "2.0"}) == 1
    assert m.registry.get_sample_value("pyoomd_episode_kills_sum") == 2


def test_textfile_never_follows_a_symlink_planted_at_the_old_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / "victim"  # stands for /etc/shadow
    target.write_text("precious\n")
    path = tmp_path / "pyoomd.prom"
    # prometheus_client's write_to_textfile opened f"{path}.{pid}.{thread id}" (following symlinks)
    planted = tmp_path / f"pyoomd.prom.{os.getpid()}.{threading.current_thread().ident}"
    planted.symlink_to(target)
    m = Metrics(MetricsConfig(textfile=str(path)), TH, lambda *a, **k: None)
    _drive(m)
    m.write_textfile()
    assert target.read_text() == "precious\n"
    assert planted.is_symlink() and os.readlink(planted) == str(target)
    got = _samples(path.read_text())
    assert got[("pyoomd_kills_total", (("reason", "memory_term"), ("signal", "SIGTERM")))] == 1
    assert (path.stat().st_mode & 0o777) == 0o644 and not path.is_symlink()
    # a symlink planted at the final name is replaced, not followed
    path.unlink()
    path.symlink_to(target)
    m.write_textfile()
    assert target.read_text() == "precious\n" and not path.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([planted.name, "pyoomd.prom", "victim"])


def test_a_world_writable_textfile_directory_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    logged: list[tuple[str, dict[str, Any]]] = []
    m = Metrics(MetricsConfig(listen="127.0.0.1:0", textfile=str(d / "pyoomd.prom")), TH,
                lambda ev, **k: logged.append((ev, k))).start()
    try:
        assert [ev for ev, _ in logged] == ["metrics_textfile_refused"]
        assert str(d) in logged[0][1]["error"] and "sticky" in logged[0][1]["error"]
        assert not list(d.iterdir())
        with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=5) as r:
            assert b"pyoomd_level" in r.read()  # the endpoint still serves
    finally:
        m.stop()
    os.chmod(d, 0o1777)  # sticky, like /tmp: fine
    m = Metrics(MetricsConfig(textfile=str(d / "pyoomd.prom")), TH, lambda ev, **k: logged.append((ev, k)))
    m.start()
    try:
        deadline = time.monotonic() + 5
        while not (d / "pyoomd.prom").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        m.stop()
    assert [ev for ev, _ in logged] == ["metrics_textfile_refused"]


def test_a_textfile_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "theirs"
    d.mkdir()
    st = d.stat()
    assert textfile_dir_problem(str(d / "x.prom"), euid=st.st_uid) is None
    problem = textfile_dir_problem(str(d / "x.prom"), euid=st.st_uid + 1) if st.st_uid else None
    if os.geteuid() == 0:
        os.chown(d, 65534, -1)
        problem = textfile_dir_problem(str(d / "x.prom"))
    assert problem is not None and str(d) in problem and "owned by uid" in problem
