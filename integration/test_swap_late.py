"""Swap that appears after the daemon started changes its levels (issue 11;
systemd#36704 is this bug in systemd-oomd): a small real zram0 is swapped
on after the dry-run daemon's start, and ``pyoomd status`` and the
``levels_changed`` event show swap levels resolved against the new
SwapTotal.  Under the scenario lock; refused when swap is already on; the
device is swapped off and reset in a ``finally``, also on failure."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from integration.desktop import ZRAM, swap_devices, why_no_zram
from integration.harness import events, run_scenario_in_slot, scenario_slot

ZRAM_MIB = 256  # small: it only has to exist (nothing is swapped out)
SWAP_TERM_PCT, SWAP_KILL_PCT = 10, 5

pytestmark = pytest.mark.skipif(why_no_zram() is not None, reason=str(why_no_zram()))


def zram_prepared(size_mib: int) -> str | None:
    """zram0 reset, sized and mkswap'd, not yet swapped on; None or why not."""
    import subprocess

    try:
        with open(f"{ZRAM}/reset", "w") as f:
            f.write("1")
        with open(f"{ZRAM}/disksize", "w") as f:
            f.write(f"{size_mib}M")
    except OSError as e:
        return f"cannot set up /dev/zram0: {e}"
    r = subprocess.run(["mkswap", "/dev/zram0"], capture_output=True, text=True, check=False)
    return None if r.returncode == 0 else f"mkswap /dev/zram0 failed: {r.stderr.strip()}"


def zram_swapoff_and_reset() -> None:
    """swapoff and reset whatever the name /proc/swaps gives it: swapped on
    inside the scene's mount namespace, it shows as ``/zram0`` outside."""
    import subprocess

    subprocess.run(["swapoff", "/dev/zram0"], capture_output=True, timeout=120, check=False)  # may be off already
    try:
        with open(f"{ZRAM}/reset", "w") as f:
            f.write("1")
    except OSError:
        pass


def test_swapon_after_start_changes_the_levels() -> None:
    sock = f"/tmp/pyoomd-it-status-{uuid.uuid4().hex[:8]}.sock"
    status = {"argv": ["pyoomd", "status", "--json", "--socket", sock]}
    with scenario_slot():
        if swap_devices():
            pytest.skip(f"swap already on ({', '.join(swap_devices())}): refusing to touch it")
        try:
            why = zram_prepared(ZRAM_MIB)
            if why:
                pytest.skip(why)
            r = run_scenario_in_slot({
                "term_below_mib": 3000, "kill_below_mib": 3500, "timeout": 5, "dry_run": True,
                "config_yaml": (f"status: {{socket: {sock}}}\n"
                                f"swap: {{term: '{SWAP_TERM_PCT}%', kill: '{SWAP_KILL_PCT}%'}}\n"),
                # A status request wakes the loop for a fresh sample when the last
                # is over 1 s old (report/control.py FRESH_S): past that, it shows the swap.
                "after_start": [status, {"argv": ["swapon", "/dev/zram0"]}, {"sleep": 1.2}, status,
                                {"argv": ["pyoomd", "status", "--socket", sock]},
                                {"wait_event": "levels_changed", "timeout": 5}],
            })
            with open("/proc/swaps") as f:
                swapped = [line.split() for line in f.read().splitlines()[1:]]
        finally:
            zram_swapoff_and_reset()
    assert not swap_devices(), "zram0 was swapped off"
    before, swapon, after, human, waited = r["after_start"]
    assert swapon["rc"] == 0, swapon
    if before["rc"] != 0 or after["rc"] != 0:
        raise AssertionError(f"pyoomd status failed: {before} {after}\n" + "\n".join(r["log_tail"]))
    assert any(row[0].endswith("zram0") for row in swapped), swapped
    startup = events(r, "startup")[0]
    assert startup["swap_total_kib"] == 0 and startup["swap_term_kib"] == 0
    b, a = json.loads(before["stdout"]), json.loads(after["stdout"])
    assert b["levels_for"]["swap_total_kib"] == 0 and b["thresholds"]["swap_term_kib"] == 0
    total = a["levels_for"]["swap_total_kib"]
    assert total > (ZRAM_MIB - 1) << 10, a["levels_for"]  # the device, less mkswap's header page
    assert a["thresholds"]["swap_term_kib"] == int(total * SWAP_TERM_PCT / 100.0), a["thresholds"]
    assert a["thresholds"]["swap_kill_kib"] == int(total * SWAP_KILL_PCT / 100.0), a["thresholds"]
    assert a["last_sample"]["swap_total_kib"] == total
    assert f"SwapTotal {total} KiB" in human["stdout"], human["stdout"]
    assert waited["seen"], r["log_tail"]
    (changed,) = events(r, "levels_changed")
    assert changed["old_swap_total_kib"] == 0 and changed["swap_total_kib"] == total
    assert changed["new"]["swap_term_kib"] == a["thresholds"]["swap_term_kib"] and changed["zram"], changed
    assert not os.path.exists(sock)
