"""pyoomd.units.human_kib, the one KiB formatter: the outputs each of its
users printed before they shared it (decide.py's reasons with two GiB
decimals, sdnotify's STATUS= and the journal's MESSAGE= with one, the
notifications' three figures down to KiB)."""

from __future__ import annotations

import pytest

from pyoomd.judge import decide
from pyoomd.model import Level, MemSample
from pyoomd.report import journal, sdnotify
from pyoomd.report.notify import kill_message
from pyoomd.units import human_kib

# kib: (reasons, status/journal, notifications)
PINNED = {
    0: ("0 MiB", "0 MiB", "0 KiB"),
    512: ("0 MiB", "0 MiB", "512 KiB"),  # half a MiB rounds to even
    513: ("1 MiB", "1 MiB", "513 KiB"),
    900: ("1 MiB", "1 MiB", "900 KiB"),
    1023: ("1 MiB", "1 MiB", "1023 KiB"),
    1024: ("1 MiB", "1 MiB", "1.0 MiB"),
    1536: ("2 MiB", "2 MiB", "1.5 MiB"),
    102399: ("100 MiB", "100 MiB", "100.0 MiB"),
    102400: ("100 MiB", "100 MiB", "100 MiB"),
    524288: ("512 MiB", "512 MiB", "512 MiB"),
    1048575: ("1024 MiB", "1024 MiB", "1024 MiB"),
    1048576: ("1.00 GiB", "1.0 GiB", "1.0 GiB"),
    1100000: ("1.05 GiB", "1.0 GiB", "1.0 GiB"),
    1572864: ("1.50 GiB", "1.5 GiB", "1.5 GiB"),
    7444889: ("7.10 GiB", "7.1 GiB", "7.1 GiB"),
    104857599: ("100.00 GiB", "100.0 GiB", "100.0 GiB"),
    104857600: ("100.00 GiB", "100.0 GiB", "100 GiB"),
    17179869184: ("16384.00 GiB", "16384.0 GiB", "16384 GiB"),
}


@pytest.mark.parametrize("kib", sorted(PINNED))
def test_the_three_styles_print_what_they_printed(kib: int) -> None:
    reasons, status, notification = PINNED[kib]
    assert human_kib(kib, 2) == reasons
    assert human_kib(kib, 1) == status
    assert human_kib(kib) == notification


def test_the_users_print_through_it() -> None:
    sample = MemSample(16 << 20, 1572864, 8 << 20, 524288)
    assert sdnotify.status_text(Level.WARN, sample) == (
        "WARN: MemAvailable 1.5 GiB (9.4%), SwapFree 512 MiB (6.2%)")
    # decide.py's Thresholds (whichever settings module defines it)
    th = decide.Thresholds(mem_warn_kib=2 << 20, mem_term_kib=1100000, mem_kill_kib=512 << 10,
                           swap_term_kib=1 << 20, swap_kill_kib=512 << 10)
    assert decide.level_of(sample, th) == (
        Level.WARN, "MemAvailable 1.50 GiB (9.4%) <= warn 2.00 GiB")
    assert decide.level_of(MemSample(16 << 20, 1000, 8 << 20, 1000), th)[1] == (
        "MemAvailable 1 MiB (0.0%) <= kill 512 MiB, SwapFree 1 MiB (0.0%)")
    kill = {"event": "kill", "comm": "hog", "pid": 7, "rss_kib": 1048576, "swap_kib": 524288, "reason": "r"}
    assert journal.message(kill) == "Killed hog (pid 7, 1.5 GiB) to relieve memory: r"
    assert journal.message({**kill, "rss_kib": 1.5, "swap_kib": None}).startswith("Killed hog (pid 7, ?)")
    assert kill_message({"comm": "hog", "pid": 7, "rss_kib": 7444889, "swap_kib": 0}).body.count("7.1 GiB") == 1
