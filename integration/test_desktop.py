"""The emulated small desktop with real zram swap (issue 11), and pyoomd's
zram cost estimate against a real device.  See integration/desktop.py.

~2.5 min: locking the ballast takes ~70 s on this VM, then two scenes of
~20 s.  Skipped, with the reason, where zram or swapon is not available or
swap is already on.
"""

from __future__ import annotations

from typing import Any

import pytest

from integration import desktop

# The probe's longest stall, seconds.  Measured in the seeded, compressible
# scene (README "Swap that cannot keep up"): 0.003-0.025 s with pyoomd; the
# issue's goal is ~0.5 s.  A margin for the busy shared machine.
MAX_STALL_S = 0.5


@pytest.fixture(scope="module")
def scenes() -> list[dict[str, Any]]:
    return desktop.run_many([
        # zram already holds half of each tab's ~3:1 data: the "no kill" row
        {"daemon": "pyoomd", "data": "zero3", "pageout_pct": 50},
        # incompressible data: zram cannot help at all
        {"daemon": "pyoomd", "data": "random", "pageout_pct": 50},
    ])


def _check(r: dict[str, Any]) -> None:
    if r.get("skipped"):
        print(f"SKIP: {r['skipped']}")
        pytest.skip(r["skipped"])
    print({k: v for k, v in r.items() if k not in ("events", "daemon_lines", "spec")})
    assert "scene_failed" not in r, r.get("stderr")
    assert not r["watchdog"], f"the watchdog had to end the scene: {r['watchdog']}"
    assert r["kernel_oom_kills"] == 0
    assert set(r["died"]) == {"leak"}, r["died"]
    assert r["returncodes"]["leak"] == -15  # SIGTERM: ours
    kills = [e for e in r["events"] if e.get("event") == "kill"]
    assert [e["pid"] for e in kills] == [r["pids"]["leak"]]
    assert r["probe"]["max_stall_s"] <= MAX_STALL_S, r["probe"]


def test_seeded_compressible_desktop(scenes: list[dict[str, Any]]) -> None:
    _check(scenes[0])
    kill = next(e for e in scenes[0]["events"] if e.get("event") == "kill")
    # swap was mostly free: the old "memory low AND swap low" rule would have waited
    # (the relief rule's two reasons: MemAvailable falling faster than swap
    # takes it, or stalls while it does; or the thrash rule)
    assert any(why in kill["reason"] for why in ("swap not keeping up", "swap not relieving", "thrash")), \
        kill["reason"]


def test_incompressible_desktop(scenes: list[dict[str, Any]]) -> None:
    _check(scenes[1])


def test_zram_cost_estimate_on_a_real_device() -> None:
    got = desktop.zram_cost_check()
    if isinstance(got, str):
        print(f"SKIP: {got}")
        pytest.skip(got)
    print(got)
    by = {(g["data"], g["mib"]): g for g in got}
    comp, rand, stray = by[("zero3", 128)], by[("random", 64)], by[("zero3", 1)]
    assert comp["orig_mib"] >= 100 and rand["orig_mib"] >= 50  # really stored
    assert 0.25 <= comp["cost"] <= 0.45  # 1/3 random bytes a page: ~3:1
    assert rand["cost"] >= 0.95  # incompressible: zram frees nothing
    # 1 MiB stored: below MIN_STORED_BYTES, the algorithm's typical cost, not the overhead
    assert stray["orig_mib"] <= 1.0 and stray["cost"] == desktop_typical(stray["algorithm"])


def desktop_typical(algorithm: str | None) -> float:
    from pyoomd.sense.zram import DEFAULT_COST, TYPICAL_COST

    return TYPICAL_COST.get(algorithm or "", DEFAULT_COST)
