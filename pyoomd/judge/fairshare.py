"""Per-user fair share (``choice: {by_user: true}``).  Pure.

On a shared machine the largest process belongs to whoever runs one big
job, while another user's fifty mid-sized processes caused the pressure
(earlyoom#336 and PR #375; systemd PR #19007 and #25853).  With fair share
the user comes first: among the users that hold memory (RSS+swap of all
their processes), the one furthest above an equal share of the total;
then that user's worst process, with badness, growth and policies as
usual.  With one user the order is exactly the usual one.

``user_shares`` turns per-process memory into users in choice order;
``fair_order`` applies that order to a candidate list (stable: within a
user, the list's own order is kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..model import Candidate


@dataclass(frozen=True, slots=True)
class UserShare:
    """One user's memory against the equal share."""

    uid: int
    kib: int  # RSS+swap of all the user's processes
    share_kib: int  # total / number of users holding memory
    processes: int

    @property
    def excess_kib(self) -> int:
        return self.kib - self.share_kib


def user_shares(rows: Iterable[tuple[int, int]]) -> list[UserShare]:
    """``rows``: (uid, RSS+swap KiB) of each process.  The users holding
    memory, furthest above the equal share first (ties: more memory, then
    the lower uid)."""
    kib: dict[int, int] = {}
    count: dict[int, int] = {}
    for uid, mem in rows:
        if mem > 0:
            kib[uid] = kib.get(uid, 0) + mem
            count[uid] = count.get(uid, 0) + 1
    if not kib:
        return []
    share = sum(kib.values()) // len(kib)
    out = [UserShare(uid, k, share, count[uid]) for uid, k in kib.items()]
    return sorted(out, key=lambda u: (-u.excess_kib, -u.kib, u.uid))


def fair_order(candidates: Sequence[Candidate], shares: Sequence[UserShare]) -> list[Candidate]:
    """The candidates grouped by user in ``shares`` order, each group in the
    given order; users not in ``shares`` (no memory seen) come last, in the
    given order.  One user, or no shares: the list unchanged."""
    rank = {u.uid: i for i, u in enumerate(shares)}
    last = len(rank)
    return sorted(candidates, key=lambda c: rank.get(c.proc.uid, last))
