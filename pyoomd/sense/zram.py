"""Zram swap: free swap that costs RAM.

A page swapped out to zram is compressed into RAM.  Swapping out X KiB frees
X KiB but takes ``c * X`` KiB back, where ``c`` is the device's RAM cost per
byte stored: ``mem_used_total / orig_data_size`` from
``/sys/block/zramN/mm_stat`` (allocator overhead included).  So a zram
device's free space relieves memory only by ``(1 - c)`` of its size, and
SwapFree, which counts it whole, hides real exhaustion: a 24 GiB zram device
on a 24 GiB machine shows 24 GiB "free swap" while RAM itself runs out.

pyoomd counts what swapping can still free:

    free_d      = Size_d - Used_d                      (KiB, /proc/swaps)
    usable_d    = min(free_d, (mem_limit - mem_used_total) / c)   if mem_limit
    swap_free'  = SwapFree - sum(free_d) + sum(usable_d * (1 - c_d))

so disk swap counts whole (c = 0), zram by its net gain, and a device whose
data does not compress (c >= 1) counts as no free swap at all.  SwapTotal is
left as is, so percentage thresholds keep their meaning ("10 % of the swap
size still gainable").

The measured ratio is believed only once the device stores at least
``MIN_STORED_BYTES`` (16 MiB): below that, allocator overhead dominates
(issue 11: one stray 4 KiB page held in ~20 KiB of zsmalloc memory clamped
``c`` to 1 and valued a 2 GiB device at zero).  Until then the cost is the
algorithm's typical one (``TYPICAL_COST``, from ``comp_algorithm``), or
``DEFAULT_COST`` for one we do not know.  Checked on a real lz4 zram device
(integration/test_desktop.py): pages 1/3 random, 2/3 zeros cost 0.34-0.36
(~2.9:1), random pages cost ~1.0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ParseError
from ..model import MemSample
from .procfs import Procfs

# RAM cost per stored byte before anything is stored: 0.5 is a 2:1 ratio,
# below what lzo-rle (~2.5-3:1) and zstd (~3-4:1) reach on typical anonymous
# memory, so an empty device is counted conservatively.
DEFAULT_COST = 0.5
# Below this much stored data the measured ratio is allocator overhead.
MIN_STORED_BYTES = 16 << 20
# RAM per stored byte on typical anonymous memory (allocator overhead
# included), rounded towards caution: lz4 ~2.1-2.5:1, lzo/lzo-rle ~2.5-3:1,
# zstd ~3-4:1 (kernel zram benchmarks, and the integration check above).
TYPICAL_COST = {"lz4": 0.5, "lz4hc": 0.45, "lzo": 0.4, "lzo-rle": 0.4, "zstd": 0.33, "deflate": 0.36,
                "842": 0.5}


@dataclass(frozen=True, slots=True)
class SwapDevice:
    """A line of /proc/swaps (sizes in KiB)."""

    name: str
    size_kib: int
    used_kib: int


@dataclass(frozen=True, slots=True)
class ZramStat:
    """The mm_stat fields we use (bytes)."""

    orig_data_size: int
    mem_used_total: int
    mem_limit: int  # 0: no limit


def parse_swaps(data: bytes, path: str = "swaps") -> list[SwapDevice]:
    """/proc/swaps: a header, then ``Filename Type Size Used Priority``."""
    out = []
    for line in data.split(b"\n")[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 5 or not fields[2].isdigit() or not fields[3].isdigit():
            raise ParseError(path, "line", line, "expected Filename Type Size Used Priority")
        name = fields[0].decode("utf-8", errors="surrogateescape").replace("\\040", " ")
        out.append(SwapDevice(name, int(fields[2]), int(fields[3])))
    return out


def parse_mm_stat(data: bytes, path: str = "mm_stat") -> ZramStat:
    """mm_stat: orig_data_size compr_data_size mem_used_total mem_limit ... (bytes)."""
    fields = data.split()
    if len(fields) < 4 or not all(f.isdigit() for f in fields[:4]):
        raise ParseError(path, "mm_stat", data[:80], "expected at least 4 unsigned integers")
    return ZramStat(int(fields[0]), int(fields[2]), int(fields[3]))


def is_zram(dev: SwapDevice) -> bool:
    return os.path.basename(dev.name).startswith("zram")


def cost(stat: ZramStat, algorithm: str | None = None) -> float:
    """RAM used per byte stored, clamped to [0, 1]; the algorithm's typical
    cost while less than MIN_STORED_BYTES is stored."""
    if stat.orig_data_size < MIN_STORED_BYTES:
        return TYPICAL_COST.get(algorithm or "", DEFAULT_COST)
    return min(1.0, stat.mem_used_total / stat.orig_data_size)


def parse_algorithm(data: bytes) -> str | None:
    """comp_algorithm: ``lzo [lzo-rle] lz4`` -> ``lzo-rle`` (the one in use)."""
    for word in data.split():
        if word.startswith(b"[") and word.endswith(b"]"):
            return word[1:-1].decode("ascii", "replace")
    return None


def effective_swap_free_kib(swap_free_kib: int, zrams: list[tuple[SwapDevice, ZramStat]],
                            algorithms: dict[str, str | None] | None = None) -> int:
    """SwapFree counting each zram device by its net gain (module docstring)."""
    total = swap_free_kib
    for dev, stat in zrams:
        free = max(0, dev.size_kib - dev.used_kib)
        c = cost(stat, (algorithms or {}).get(dev.name))
        usable = float(free)
        if stat.mem_limit > 0:
            room_kib = max(0, stat.mem_limit - stat.mem_used_total) / 1024
            usable = min(usable, room_kib / c) if c > 0 else usable
        total += -free + int(usable * (1.0 - c))
    return max(0, min(swap_free_kib, total))


class Zram:
    """Reads /proc/swaps and zram mm_stat; adjusts samples when zram is swap."""

    def __init__(self, procfs: Procfs) -> None:
        self.procfs = procfs
        self._algorithms: dict[str, str | None] = {}
        self.active = bool(self.devices())

    def devices(self) -> list[tuple[SwapDevice, ZramStat]]:
        try:
            swaps = parse_swaps(self.procfs.read(self.procfs.swaps, 1 << 16), self.procfs.swaps)
        except (OSError, ParseError):
            return []
        out = []
        for dev in swaps:
            if not is_zram(dev):
                continue
            path = self.procfs.zram_mm_stat(dev.name)
            try:
                out.append((dev, parse_mm_stat(self.procfs.read(path, 4096), path)))
            except (OSError, ParseError):
                continue  # counted as plain swap
            if dev.name not in self._algorithms:  # read once per device
                try:
                    algo = parse_algorithm(self.procfs.read(os.path.join(os.path.dirname(path), "comp_algorithm"), 4096))
                except OSError:
                    algo = None
                self._algorithms[dev.name] = algo
        return out

    def algorithm(self, name: str) -> str | None:
        return self._algorithms.get(name)

    def used_kib(self) -> int:
        """RAM taken by all zram swap devices (mem_used_total), KiB."""
        return sum(stat.mem_used_total for _, stat in self.devices()) // 1024

    def adjust(self, sample: MemSample) -> MemSample:
        """The sample with SwapFree replaced by the effective free swap."""
        if not self.active:
            return sample
        free = effective_swap_free_kib(sample.swap_free_kib, self.devices(), self._algorithms)
        return sample if free == sample.swap_free_kib else sample._replace(swap_free_kib=free)
