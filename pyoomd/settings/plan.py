"""The compiled plan: what the short-lived compile process hands the loop.

``pyoomd run`` validates its flags, config and policies in a child process
(``pyoomd.compile``: argparse, pydantic, YAML), which prints a plan: plain
JSON.  The loop rebuilds from it plain objects with the attribute paths the
daemon and observers use on a pydantic ``Settings`` (``settings.kill.grace``,
``settings.compile(mem_total, swap_total)``, ...), so ``Daemon`` accepts
either.  Light: stdlib only (see README, "Memory of the running daemon").

Plan (version 1)::

    {"plan": 1, "procfs": "/proc", "config_files": [...],
     "settings": {"memory": {"term": {"pct": 10.0, "kib": null}, ...}, "kill": {...}, ...},
     "policy": <pyoomd.policy.rules.loaded_to_plan>}
"""

from __future__ import annotations

from typing import Any

from .amounts import Amount, Thresholds, compile_thresholds

PLAN_VERSION = 1
# Sections whose every value is an Amount (a threshold as written).
_AMOUNT_SECTIONS = ("memory", "swap")


class Section:
    """One config section as plain, read-only attributes (``cfg.grace``)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (the plan is replaced whole on reload)")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class RuntimeSettings(Section):
    """The loop's Settings: same attributes as ``pyoomd.config.Settings``."""

    def compile(self, mem_total_kib: int, swap_total_kib: int) -> Thresholds:
        return compile_thresholds(self.memory, self.swap, mem_total_kib, swap_total_kib)  # type: ignore[attr-defined]


def _value(v: Any) -> Any:
    if isinstance(v, dict):
        return Section({k: _value(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_value(x) for x in v)
    return v


def settings_from_plan(d: dict[str, Any]) -> RuntimeSettings:
    """Plain objects from the plan's ``settings`` (lists become tuples, as
    the pydantic model has them; thresholds become Amounts)."""
    out: dict[str, Any] = {}
    for key, v in d.items():
        if key in _AMOUNT_SECTIONS:
            out[key] = Section({k: Amount(pct=a["pct"], kib=a["kib"]) for k, a in v.items()})
        else:
            out[key] = _value(v)
    return RuntimeSettings(out)


def settings_to_plan(obj: Any) -> Any:
    """JSON-serialisable form of a pydantic ``Settings`` (or of the plain
    objects built from one: the round trip is the identity)."""
    fields = getattr(type(obj), "model_fields", None)
    if fields is not None:  # a pydantic model (without importing pydantic here)
        return {name: settings_to_plan(getattr(obj, name)) for name in fields}
    if isinstance(obj, Section):
        return {k: settings_to_plan(v) for k, v in obj.__dict__.items()}
    if isinstance(obj, Amount):
        return {"pct": obj.pct, "kib": obj.kib}
    if isinstance(obj, (list, tuple)):
        return [settings_to_plan(x) for x in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot put {type(obj).__name__} in a plan: {obj!r}")
