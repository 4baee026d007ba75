"""LowMemoryWarning end to end, in a private PID namespace: pyoomd owns
org.freedesktop.LowMemoryMonitor on a dbus-daemon the scene starts (in
place of the system bus); a cooperating hog listens with a match rule and
frees all it holds when it hears level 50 at the WARN level, so memory
never reaches TERM and nothing is killed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.harness import MARGIN_MIB, events, run_scenario


@pytest.fixture
def out_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pyoomd-it-lowmem-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_hog_that_frees_memory_when_warned_makes_the_kill_unnecessary(out_dir: Path) -> None:
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (Debian: apt-get install dbus-daemon)")
    hog_out = out_dir / "hog.out"
    # WARN 600 MiB below MemAvailable at start, TERM 800 MiB further (3 s of
    # growth at 256 MiB/s): the hog would cross TERM by MARGIN_MIB if it did
    # not listen.  KILL is out of reach.
    r = run_scenario({
        "test_bus": True,
        "config_yaml": "low_memory_monitor: {system_bus: '{bus}', min_interval: 15s}\n",
        "warn_below_mib": 600, "term_below_mib": 1400, "kill_below_mib": 1400 + MARGIN_MIB + 700,
        "timeout": 25,
        "hogs": [{"rate": 256, "max": 1400 + MARGIN_MIB, "start": 100, "hold": 6, "free_on_lowmem": "{bus}",
                  "stdout": str(hog_out)}],
    })
    hog = r["hogs"][0]
    started = events(r, "low_memory_monitor_started")
    assert len(started) == 1 and started[0]["name"] == "org.freedesktop.LowMemoryMonitor", r["log_tail"]
    warnings = events(r, "low_memory_warning")
    assert [w["lmm_level"] for w in warnings] == [50] and warnings[0]["oom_level"] == "WARN", r["log_tail"]
    heard = hog_out.read_text().splitlines()
    assert "lowmem 50" in heard and "freed lowmem 50" in heard, heard
    assert not events(r, "kill") and not events(r, "low_memory"), r["log_tail"]  # TERM never reached
    assert hog["returncode"] == 0, r["log_tail"]  # no signal: it exited after its hold
    assert r["min_avail_kib"] > r["term_kib"], (r["min_avail_kib"], r["term_kib"])
    print(f"lowest MemAvailable {r['min_avail_kib'] // 1024} MiB, TERM {r['term_kib'] // 1024} MiB: "
          f"{(r['min_avail_kib'] - r['term_kib']) // 1024} MiB to spare")
