"""Zram counted by its net gain: fixture trees of /proc/swaps and mm_stat."""

from __future__ import annotations

import os

import pytest

from pyoomd.errors import ParseError
from pyoomd.model import MemSample
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.zram import DEFAULT_COST, Zram, effective_swap_free_kib, parse_mm_stat, parse_swaps

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "zram")
GIB_KIB = 1 << 20


def zram_for(case: str) -> Zram:
    return Zram(Procfs(os.path.join(FIX, case, "proc"), sys_root=os.path.join(FIX, case, "sys")))


def sample(swap_total: int, swap_free: int) -> MemSample:
    return MemSample(16 * GIB_KIB, 4 * GIB_KIB, swap_total, swap_free)


@pytest.mark.parametrize("case, swap_total, swap_free, expected", [
    # 6 GiB free zram at cost 512/2048 = 0.25 -> 6 GiB * 0.75
    ("zram_only", 8 * GIB_KIB, 6 * GIB_KIB, 6 * GIB_KIB * 3 // 4),
    # nothing stored yet: DEFAULT_COST (0.5) -> half of 4 GiB
    ("zram_empty", 4 * GIB_KIB, 4 * GIB_KIB, int(4 * GIB_KIB * (1 - DEFAULT_COST))),
    # 2 GiB disk swap counts whole; zram (7 GiB free, cost 0.5) is capped by
    # its mem_limit: 512 MiB of room stores 1 GiB, which frees 512 MiB net
    ("mixed_limit", 10 * GIB_KIB, 9 * GIB_KIB, 2 * GIB_KIB + 512 * 1024),
    # cost >= 1: swapping there frees nothing
    ("incompressible", 4 * GIB_KIB, 3 * GIB_KIB, 0),
])
def test_effective_swap_free(case: str, swap_total: int, swap_free: int, expected: int) -> None:
    z = zram_for(case)
    assert z.active
    adjusted = z.adjust(sample(swap_total, swap_free))
    assert adjusted.swap_free_kib == expected
    assert adjusted.swap_total_kib == swap_total  # percentages keep their base


def test_no_zram_leaves_the_sample_alone() -> None:
    z = zram_for("no_swap")
    assert not z.active
    s = sample(0, 0)
    assert z.adjust(s) is s


def test_zram_used_kib_is_mem_used_total() -> None:
    assert zram_for("zram_only").used_kib() == 512 * 1024


def test_never_above_swapfree_nor_below_zero() -> None:
    dev, stat = parse_swaps(b"h\n/dev/zram0 partition 100 0 5\n")[0], parse_mm_stat(b"0 0 0 0 0 0 0 0\n")
    assert effective_swap_free_kib(40, [(dev, stat)]) == 0  # SwapFree lower than the device's free: inconsistent read
    assert effective_swap_free_kib(100, [(dev, stat)]) == 50


def test_parsers_reject_garbage() -> None:
    with pytest.raises(ParseError):
        parse_swaps(b"header\n/dev/zram0 partition lots 0 100\n")
    with pytest.raises(ParseError):
        parse_mm_stat(b"1 2\n")
    assert parse_swaps(b"header\n/swap\\040file file 10 2 -2\n")[0].name == "/swap file"


def test_missing_mm_stat_counts_as_plain_swap(tmp_path: os.PathLike[str]) -> None:
    proc = os.path.join(tmp_path, "proc")
    os.makedirs(proc)
    with open(os.path.join(proc, "swaps"), "w") as f:
        f.write("h\n/dev/zram7 partition 1000 0 100\n")
    z = Zram(Procfs(proc, sys_root=os.path.join(tmp_path, "sys")))
    assert not z.active


def test_almost_empty_device_uses_the_algorithms_typical_cost() -> None:
    """One stray 4 KiB page in ~20 KiB of allocator memory (issue 11) must
    not value the whole device at zero: below MIN_STORED_BYTES the measured
    ratio is not believed."""
    from pyoomd.sense.zram import MIN_STORED_BYTES, TYPICAL_COST, cost, parse_algorithm

    stray = parse_mm_stat(b"4096 40 20480 0 20480 0 0 0 0\n")
    assert cost(stray, "lz4") == TYPICAL_COST["lz4"]
    assert cost(stray, None) == DEFAULT_COST
    assert cost(stray, "unknown-algo") == DEFAULT_COST
    big = parse_mm_stat(f"{MIN_STORED_BYTES} 0 {MIN_STORED_BYTES // 4} 0 0 0 0 0\n".encode())
    assert cost(big, "lz4") == 0.25
    dev = parse_swaps(b"h\n/dev/zram0 partition 2097148 4 100\n")[0]
    assert effective_swap_free_kib(2097144, [(dev, stray)], {"/dev/zram0": "lz4"}) == 2097144 // 2
    assert parse_algorithm(b"lzo [lzo-rle] lz4 zstd\n") == "lzo-rle"
    assert parse_algorithm(b"lz4\n") is None
