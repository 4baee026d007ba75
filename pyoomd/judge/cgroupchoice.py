"""The cgroup-aware choice (``cgroup_choice``): which leaf cgroup below the
root the victim is taken from.  Pure: the leaves are read by sense/cgroup.py
(``LeafStat.read``) and passed in."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..sense.cgroup import LeafStat


def choose_leaf(stats: list[LeafStat], by: str) -> LeafStat | None:
    """Pure: the leaf to take a victim from.  Empty and omitted leaves never;
    avoided leaves only when nothing else is left; then the most pressure
    (ties: more memory) or the most memory (ties: more pressure)."""
    eligible = [s for s in stats if s.pids and s.preference != "omit"]
    if not eligible:
        return None

    def key(s: LeafStat) -> tuple[bool, float, float, str]:
        main, tie = (s.pressure, s.memory_kib) if by == "pressure" else (s.memory_kib, s.pressure)
        return (s.preference != "avoid", main, tie, s.cgroup.path)

    return max(eligible, key=key)
