"""Per-user fair share with real processes of two users in a private PID
namespace: thirty ~100 MiB processes of user A against one 1 GiB process
of user B, all growing together (in proportion) until TERM is crossed.
With ``choice: {by_user: true}`` the first victim is one of A's (A holds
~3/4 of the memory, far above an equal share); without it, B's process,
the largest (the kernel's and earlyoom's choice)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from integration.harness import MARGIN_MIB, events, run_scenario

USER_A, USER_B = 65534, 4242  # nobody, and a uid without a passwd entry: fair share counts uids
A_PROCS, A_MIB, B_MIB = 30, 100, 1024
TOTAL_MIB = A_PROCS * A_MIB + B_MIB  # 4024
GROW_S = 3.0  # every process grows for 3 s: A's share of the memory is the same at any moment


def scene(by_user: bool) -> dict[str, Any]:
    go = os.path.join(tempfile.gettempdir(), f"pyoomd-it-fair-go-{os.getpid()}-{int(by_user)}")
    if os.path.exists(go):
        os.unlink(go)
    hog = {"start": 0, "hold": 20, "go_file": go}
    hogs = [{**hog, "user": USER_A, "max": A_MIB, "rate": A_MIB / GROW_S} for _ in range(A_PROCS)]
    hogs.append({**hog, "user": USER_B, "max": B_MIB, "rate": B_MIB / GROW_S})
    # TERM is crossed with MARGIN_MIB + 1000 of growth still to come (the
    # desktop scenes' ballast, run just before in CI, came back late by more
    # than MARGIN_MIB once); KILL stays out of reach.
    term_below = TOTAL_MIB - MARGIN_MIB - 1000
    spec = {
        "go_file": go, "hogs": hogs, "timeout": 30, "stop_after_events": ["kill"],
        "term_below_mib": term_below, "kill_below_mib": TOTAL_MIB + 700,
        "config_yaml": f"choice: {{by_user: {str(by_user).lower()}}}\nlow_memory_monitor: {{enabled: false}}\n",
    }
    return spec


def first_victim(r: dict[str, Any]) -> dict[str, Any]:
    kills = events(r, "kill")
    assert kills, r["log_tail"]
    return kills[0]


def test_by_user_the_victim_is_one_of_the_many_small_processes_of_the_user_above_the_share() -> None:
    r = run_scenario(scene(by_user=True))
    victim = first_victim(r)
    a_pids = {h["pid"] for h in r["hogs"][:A_PROCS]}
    assert victim["uid"] == USER_A and victim["pid"] in a_pids, (victim, r["log_tail"])
    chosen = events(r, "user_chosen")
    assert chosen and chosen[0]["uid"] == USER_A, r["log_tail"]
    users = dict(map(tuple, chosen[0]["users"]))
    assert users[USER_A] > 2 * users[USER_B], users  # A holds ~3/4 of the memory
    print(f"by_user: victim pid {victim['pid']} uid {victim['uid']} ({victim['rss_kib'] // 1024} MiB); "
          f"users {({u: k // 1024 for u, k in users.items()})} MiB, share {chosen[0]['share_kib'] // 1024} MiB")


def test_without_fair_share_the_victim_is_the_one_large_process() -> None:
    r = run_scenario(scene(by_user=False))
    victim = first_victim(r)
    assert victim["uid"] == USER_B and victim["pid"] == r["hogs"][-1]["pid"], (victim, r["log_tail"])
    assert not events(r, "user_chosen")
    print(f"default: victim pid {victim['pid']} uid {victim['uid']} ({victim['rss_kib'] // 1024} MiB)")
