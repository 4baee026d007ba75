"""The daemon's cgroup-aware choice (process-granular kill) over a fake /proc
whose processes live in the fixture cgroup v2 tree, in dry-run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from helpers import FakeProc, FakeSampler, build
from logcapture import Log

from pyoomd.daemon import Daemon
from pyoomd.sense.procfs import Procfs
from pyoomd.settings.load import load_config

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "cgroup", "v2")
APP = "/user.slice/user-1000.slice/user@1000.service/app.slice"


def _proc(pid: int, score: int, cgroup: str, rss_mib: int) -> FakeProc:
    return FakeProc(pid=pid, oom_score=score, rss_kib=rss_mib << 10, cgroup=f"0::{cgroup}\n".encode())


def _daemon(tmp_path: Path, **choice: Any) -> tuple[Daemon, Log]:
    procs = [
        _proc(101, 700, f"{APP}/firefox.scope", 3000),  # the biggest process of all
        _proc(102, 300, f"{APP}/firefox.scope", 900),
        _proc(201, 200, f"{APP}/build.service", 600),  # build.service: most pressure (some avg10 60)
        _proc(202, 350, f"{APP}/build.service", 1200),  # ... and its worst process
        _proc(203, 100, f"{APP}/build.service", 300),
        _proc(301, 500, "/user.slice/user-1000.slice/session-1.scope", 2000),
    ]
    fake = build(tmp_path / "proc", procs)
    procfs = Procfs(fake.root, cgroup_root=FIX)
    settings = load_config(None, {"dry_run": True, "cgroup_choice": {"enabled": True, "root": "/user.slice",
                                                                     **choice}})
    log = Log()
    return Daemon(settings, procfs, FakeSampler(), log), log


def test_worst_process_of_the_most_pressured_leaf_not_the_biggest_overall(tmp_path: Path) -> None:
    d, log = _daemon(tmp_path, by="pressure")
    only = d._choose_cgroup()
    assert only == {201, 202, 203}
    chosen = log.named("cgroup_chosen")
    assert chosen and chosen[0]["cgroup"] == f"{APP}/build.service" and chosen[0]["pressure"] == 60.0
    assert [c.proc.pid for c in d.scan(top_n=1, only=only)][:1] == [202]


def test_by_memory_picks_the_biggest_leaf(tmp_path: Path) -> None:
    d, log = _daemon(tmp_path, by="memory")
    only = d._choose_cgroup()
    assert log.named("cgroup_chosen")[0]["cgroup"] == "/user.slice/user-1000.slice/session-1.scope"
    assert [c.proc.pid for c in d.scan(top_n=1, only=only)][:1] == [301]


def test_disabled_choice_takes_the_biggest_overall(tmp_path: Path) -> None:
    d, log = _daemon(tmp_path, by="pressure")
    d.settings = load_config(None, {"dry_run": True})
    assert d._choose_cgroup() is None and not log.named("cgroup_chosen")
    assert [c.proc.pid for c in d.scan(top_n=1)][:1] == [101]
