"""Scenes beyond integration/test_growth.py's four (issue 12): other counts,
sizes and rates, bystanders still allocating when the leak starts, leaks
that start with a large block, a grower that stopped.  Shared by
integration/test_growth_scenes.py and integration/bench/right_victim.py.

Every spec is nsrun.py's (thresholds relative to MemAvailable at the start
of the scene).  Margins: TERM is crossed by the leak alone, at least
1.5 GiB before the leak's own maximum (memory freed by the previous scene
comes back during this one: up to harness.LATE_FREE_MIB, 1 GiB here), and
KILL lies at least 700 MiB beyond TERM.  The leak is killed at TERM; if it
were not, the scene's processes would total at most ~5.6 GiB (the
harness's safety cgroup holds 6).
"""

from __future__ import annotations

import random
from typing import Any

from integration.harness import MARGIN_MIB


def _tab(size: int, start: int, rate: float) -> dict[str, Any]:
    """A browser-like tab at oom_score_adj +300, filling from ``start`` MiB
    to ``size`` at ``rate`` MiB/s after it is ready."""
    return {"rate": rate, "max": size, "start": start, "hold": 90, "adj": 300}


def filling_tabs_block_leak() -> dict[str, Any]:
    """Issue 12's measured case: four tabs still filling (50 -> 250 MiB at
    25 MiB/s) when a leak starts from a 300 MiB block at 100 MiB/s."""
    tabs = [_tab(250, 50, 25) for _ in range(4)]
    leak = {"rate": 100, "max": 3700, "start": 300, "hold": 60, "delay": 0.5}
    # tabs 1000 MiB in all; the leak reaches TERM at ~1600 MiB, 1100 below its max
    return {"what": "4 tabs filling 50->250 MiB (adj 300) + leak from a 300 MiB block at 100 MiB/s",
            "spec": {"term_below_mib": 2600, "kill_below_mib": 2600 + 800, "warn_below_mib": 1100,
                     "timeout": 40, "bystanders": tabs, "hogs": [leak]},
            "roles": {"bystanders": [f"tab{i + 1}" for i in range(4)], "hogs": ["leak"]}, "cause": ["leak"]}


def crowd_fast_leak() -> dict[str, Any]:
    """Twelve small processes still filling (20 -> 80 MiB at 8 MiB/s, half
    of them at +300), an idle 1.2 GiB database, and a leak at 200 MiB/s."""
    small = [{"rate": 8, "max": 80, "start": 20, "hold": 90, **({"adj": 300} if i % 2 else {})} for i in range(12)]
    db = {"rate": 0, "max": 1200, "start": 1200, "hold": 90}
    leak = {"rate": 200, "max": 3400, "start": 50, "hold": 60, "delay": 0.5}
    # bystanders 2160 MiB; the leak reaches TERM at ~1300 MiB, 1300 below its max
    return {"what": "12 small filling 20->80 MiB (half adj 300) + idle db 1.2 GiB + leak 200 MiB/s",
            "spec": {"term_below_mib": 2160 + 1300, "kill_below_mib": 2160 + 1300 + 800, "warn_below_mib": 2400,
                     "timeout": 40, "bystanders": small + [db], "hogs": [leak]},
            "roles": {"bystanders": [f"s{i + 1}" for i in range(12)] + ["db"], "hogs": ["leak"]},
            "cause": ["leak"]}


def stopped_grower_slow_leak() -> dict[str, Any]:
    """A grower that took 2.5 GiB at 350 MiB/s and stopped, then a leak at
    100 MiB/s from a 100 MiB block: the grower took more of the loss and is
    the kernel's choice (bigger); the leak is what still drains memory."""
    grower = {"rate": 350, "max": 2500, "start": 10, "hold": 90}
    leak = {"rate": 100, "max": 3000, "start": 100, "hold": 60, "delay": 5.0}
    # WARN crossed by the grower; TERM by the leak at ~900 MiB, or up to ~2.2
    # GiB when memory freed earlier comes back during the scene
    # (harness.LATE_FREE_MIB, seen: 1.25 GiB): still smaller than the
    # grower, 800 MiB below the leak's max.  5.5 GiB at most in all.
    return {"what": "grower 2.5 GiB at 350 MiB/s that stopped + leak 100 MiB/s starting 5 s later",
            "spec": {"term_below_mib": 2500 + 100 + 800, "kill_below_mib": 3400 + 800, "warn_below_mib": 2300,
                     "timeout": 40, "bystanders": [], "hogs": [grower, leak]},
            "roles": {"bystanders": [], "hogs": ["stopped", "leak"]}, "cause": ["leak"]}


def random_tabs_leak(seed: int) -> dict[str, Any]:
    """A family: 2-5 tabs of 150-350 MiB at +300, each filling from a third
    of its size at 15-40 MiB/s or already full; a leak from a block of
    0-400 MiB at 64-192 MiB/s.  Levels follow from the draw with the
    margins above."""
    rnd = random.Random(seed)
    tabs = []
    for _ in range(rnd.randint(2, 5)):
        size = rnd.randint(150, 350)
        filling = rnd.random() < 0.6
        tabs.append(_tab(size, size // 3 if filling else size, round(rnd.uniform(15, 40), 1) if filling else 0))
    block, rate = rnd.randint(0, 400), rnd.randint(64, 192)
    held = sum(t["max"] for t in tabs)
    approach = rnd.randint(1000, 1400)  # WARN -> TERM, crossed by the leak
    warn = held + block + rnd.randint(100, 300)
    term = warn + approach
    leak_at_term = term - held
    leak = {"rate": rate, "max": leak_at_term + MARGIN_MIB, "start": block, "hold": 60, "delay": 0.5}
    return {"what": (f"seed {seed}: {len(tabs)} tabs {[t['max'] for t in tabs]} MiB "
                     f"(filling at {[t['rate'] for t in tabs]} MiB/s) + leak from {block} MiB at {rate} MiB/s"),
            "spec": {"term_below_mib": term, "kill_below_mib": term + 800, "warn_below_mib": warn, "timeout": 45,
                     "bystanders": tabs, "hogs": [leak]},
            "roles": {"bystanders": [f"tab{i + 1}" for i in range(len(tabs))], "hogs": ["leak"]},
            "cause": ["leak"]}


BENCH_SEED = 12  # the random scene's seed in integration/bench/right_victim.py


def all_scenes(seed: int = BENCH_SEED) -> dict[str, dict[str, Any]]:
    return {"filling_tabs_block_leak": filling_tabs_block_leak(), "crowd_fast_leak": crowd_fast_leak(),
            "stopped_grower_slow_leak": stopped_grower_slow_leak(), "random_tabs_leak": random_tabs_leak(seed)}
