"""Sizes in KiB as text for people: the one formatter of the daemon's
reasons, its systemd status line, the journal's MESSAGE and the desktop
notifications (each keeps the style its readers have seen so far)."""

from __future__ import annotations

_MIB = 1 << 10
_GIB = 1 << 20


def human_kib(kib: int, gib_places: int | None = None) -> str:
    """``kib`` as text.

    ``gib_places=None`` (notifications): at most three figures, down to
    KiB: ``7.1 GiB``, ``512 MiB``, ``1.5 MiB``, ``900 KiB``.

    ``gib_places=n`` (reasons, status, journal): GiB with ``n`` decimals
    from 1 GiB up, whole MiB below: ``1.50 GiB``, ``512 MiB``, ``0 MiB``."""
    if gib_places is not None:
        if kib >= _GIB:
            return f"{kib / _GIB:.{gib_places}f} GiB"
        return f"{kib / _MIB:.0f} MiB"
    for unit, div in (("GiB", _GIB), ("MiB", _MIB)):
        if kib >= div:
            value = kib / div
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{kib} KiB"
