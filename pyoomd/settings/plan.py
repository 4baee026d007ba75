"""The compiled plan: what the short-lived compile process hands the loop.

``pyoomd run`` validates its flags, config and policies in a child process
(``pyoomd.cli.compile_child``: argparse, pydantic, YAML), which prints a plan: plain
JSON.  The loop rebuilds the same ``Settings`` from it (schema.py), with
stdlib only (see README, "Memory of the running daemon").  The codec follows
the dataclasses' type hints: no field list is kept by hand.

Plan (version 1)::

    {"plan": 1, "procfs": "/proc", "config_files": [...],
     "settings": {"memory": {"term": {"pct": 10.0, "kib": null}, ...}, "kill": {...}, ...},
     "policy": <pyoomd.policy.rules.loaded_to_plan>}
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union

from .schema import Settings

PLAN_VERSION = 1


def settings_to_plan(settings: Settings) -> dict[str, Any]:
    """JSON-serialisable form of ``settings`` (``settings_from_plan`` gives
    back an equal Settings)."""
    out = to_plan(settings)
    assert isinstance(out, dict)
    return out


def to_plan(v: Any) -> Any:
    """A dataclass (and what it holds) as JSON values: mappings, lists."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: to_plan(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [to_plan(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot put {type(v).__name__} in a plan: {v!r}")


def settings_from_plan(d: dict[str, Any]) -> Settings:
    """The ``Settings`` of a plan's ``settings`` (lists become tuples,
    thresholds Amounts: what the type hints say)."""
    out = from_plan(Settings, d)
    assert isinstance(out, Settings)
    return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # Annotated[...] markers stripped: the plain types


def from_plan(tp: Any, v: Any) -> Any:
    """The ``tp`` (a dataclass, or a type one holds) that ``to_plan`` gave ``v`` for."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(v, dict):
            raise TypeError(f"a plan's {tp.__name__} must be a mapping, not {v!r}")
        hints = _hints(tp)
        # A field the plan lacks takes its default; one this version does not
        # know is ignored: a trace written by a newer version still replays
        # (forward compatibility).
        return tp(**{f.name: from_plan(hints[f.name], v[f.name]) for f in dataclasses.fields(tp) if f.name in v})
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plan(args[0], x) for x in v)
        return tuple(from_plan(a, x) for a, x in zip(args, v, strict=True))
    if origin is Union or origin is types.UnionType:
        if v is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # X | None: the only unions in the schema
        return from_plan(inner, v)
    if origin is Literal or tp in (bool, int, str):
        return v
    if tp is float:
        return float(v)  # an int where code built the Settings with one (report_interval=60)
    raise TypeError(f"no plan codec for {tp!r}")
