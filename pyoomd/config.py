"""Daemon settings: YAML -> pydantic -> frozen runtime objects.

The loop never sees a dict: ``load_config`` returns a ``Settings`` (validated,
strict: unknown keys are errors), and ``Settings.compile(mem_total, swap_total)``
turns percentages into KiB once, giving the frozen ``Thresholds`` the judge uses.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/pyoomd/config.yaml"
DEFAULT_POLICY_DIR = "/etc/pyoomd/policies.d"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|[KMGT]|kB)?\s*$", re.IGNORECASE)
_UNIT_KIB = {"": 1, "k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}


@dataclass(frozen=True, slots=True)
class Amount:
    """A threshold as written: a percentage of the total, or a size in KiB."""

    pct: float | None = None
    kib: int | None = None

    def resolve_kib(self, total_kib: int) -> int:
        """KiB; where both a percentage and a size are given (earlyoom's -m
        with -M), the lower one wins, as in earlyoom."""
        values = []
        if self.pct is not None:
            values.append(int(total_kib * self.pct / 100.0))
        if self.kib is not None:
            values.append(self.kib)
        return min(values) if values else 0

    def __str__(self) -> str:
        parts = []
        if self.pct is not None:
            parts.append(f"{self.pct:g}%")
        if self.kib is not None:
            parts.append(f"{self.kib}KiB")
        return " or ".join(parts) or "0"


def parse_amount(raw: object) -> Amount:
    """``10%`` -> percent; ``2G``, ``512M``, ``300K``; a bare number is KiB (as
    earlyoom's -M/-S).  Raises ValueError with the raw text."""
    if isinstance(raw, bool):
        raise ValueError(f"expected a percentage or a size, got {raw!r}")
    if isinstance(raw, (int, float)):
        if not math.isfinite(raw) or raw < 0:
            raise ValueError(f"not a size: {raw!r}")
        return Amount(kib=int(raw))
    text = str(raw).strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"not a percentage: {raw!r}") from None
        if not math.isfinite(pct) or not 0.0 <= pct <= 100.0:
            raise ValueError(f"percentage out of 0..100: {raw!r}")
        return Amount(pct=pct)
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a percentage or size (like 10%, 2G, 512M, 1048576): {raw!r}")
    unit = (m.group(2) or "")[:1].lower()
    return Amount(kib=int(float(m.group(1)) * _UNIT_KIB[unit]))


def parse_duration_s(raw: object) -> float:
    """``5``, ``5s``, ``250ms``, ``2m`` -> seconds."""
    if isinstance(raw, bool):
        raise ValueError(f"expected a duration, got {raw!r}")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$", str(raw))
        if not m:
            raise ValueError(f"not a duration (like 5s, 250ms): {raw!r}")
        value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a duration: {raw!r}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LevelsConfig(_Strict):
    """TERM and KILL levels for one resource (memory or swap)."""

    term: Amount
    kill: Amount

    @field_validator("term", "kill", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> Amount:
        return v if isinstance(v, Amount) else parse_amount(v)


class MemoryConfig(LevelsConfig):
    term: Amount = Amount(pct=10.0)
    kill: Amount = Amount(pct=5.0)
    # WARN: above TERM; where sampling tightens and growth tracking starts.
    warn: Amount = Amount(pct=20.0)

    @field_validator("warn", mode="before")
    @classmethod
    def _warn(cls, v: Any) -> Amount:
        return v if isinstance(v, Amount) else parse_amount(v)


class SwapConfig(LevelsConfig):
    term: Amount = Amount(pct=10.0)
    kill: Amount = Amount(pct=5.0)


class SamplingConfig(_Strict):
    # 1 s at most between samples when memory is plentiful: earlyoom's ceiling,
    # and what keeps an idle daemon near 0.01 % CPU (one ~50 us tick a second).
    max_interval: float = 1.0
    # 2 ms at least: at 256 MiB/s a hog gains ~0.5 MiB between two samples;
    # a tick costs ~50 us, so even the tightest loop stays under 3 % of a core.
    min_interval: float = 0.002
    # Fill rates assumed at least / at most, MiB/s.  The floor is earlyoom's
    # 6000 MiB/s (its measurement with `stress`): from idle, a burst must not
    # find us asleep longer than that rate allows.  The ceiling bounds a
    # mis-measured spike; 64 GiB/s exceeds what 2 cores can fault in.
    min_rate_mib_s: float = 6000.0
    max_rate_mib_s: float = 65536.0
    swap_min_rate_mib_s: float = 800.0  # earlyoom's swap fill assumption

    @field_validator("max_interval", "min_interval", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)

    @model_validator(mode="after")
    def _order(self) -> "SamplingConfig":
        if self.min_interval <= 0 or self.min_interval > self.max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        rates = (self.min_rate_mib_s, self.max_rate_mib_s, self.swap_min_rate_mib_s)
        if not all(math.isfinite(r) and r > 0 for r in rates):
            raise ValueError("fill rates must be positive numbers")
        if self.min_rate_mib_s > self.max_rate_mib_s or self.swap_min_rate_mib_s > self.max_rate_mib_s:
            raise ValueError("need min_rate_mib_s and swap_min_rate_mib_s <= max_rate_mib_s")
        return self


class KillConfig(_Strict):
    # SIGTERM grace before SIGKILL (earlyoom never escalates on time; nohang
    # waits 10 s).  5 s lets a browser or editor save state and exit.
    grace: float = 5.0
    # After SIGKILL, how long to wait for the exit before calling the victim
    # stuck (D state, frozen cgroup) and moving on.  Exit after SIGKILL plus
    # process_mrelease took < 50 ms for a 4 GiB hog here; 2 s is ample.
    kill_timeout: float = 2.0
    # Wait after a kill for memory to be released before judging again.
    settle: float = 0.05

    @field_validator("grace", "kill_timeout", "settle", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration_s(v)


class Settings(_Strict):
    """The whole daemon configuration, as validated from YAML and flags."""

    memory: MemoryConfig = MemoryConfig()
    swap: SwapConfig = SwapConfig()
    sampling: SamplingConfig = SamplingConfig()
    kill: KillConfig = KillConfig()
    dry_run: bool = False
    log_format: Literal["auto", "console", "json"] = "auto"
    reader: Literal["auto", "cffi", "python"] = "auto"
    policy_dirs: tuple[str, ...] = (DEFAULT_POLICY_DIR,)
    # How many candidates are shown in the kill event.
    report_top: int = Field(default=5, ge=0, le=100)

    def compile(self, mem_total_kib: int, swap_total_kib: int) -> "Thresholds":
        """Resolve percentages; a KILL level above its TERM level is an error
        (KILL is the worse state).  WARN is raised to TERM if set below it."""
        mem_term = self.memory.term.resolve_kib(mem_total_kib)
        mem_kill = self.memory.kill.resolve_kib(mem_total_kib)
        swap_term = self.swap.term.resolve_kib(swap_total_kib)
        swap_kill = self.swap.kill.resolve_kib(swap_total_kib)
        if mem_kill > mem_term:
            raise ConfigError("<config>", f"memory.kill ({self.memory.kill}) is above memory.term ({self.memory.term})")
        if swap_kill > swap_term:
            raise ConfigError("<config>", f"swap.kill ({self.swap.kill}) is above swap.term ({self.swap.term})")
        return Thresholds(
            mem_warn_kib=max(self.memory.warn.resolve_kib(mem_total_kib), mem_term),
            mem_term_kib=mem_term,
            mem_kill_kib=mem_kill,
            swap_term_kib=swap_term,
            swap_kill_kib=swap_kill,
        )


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Levels in KiB, resolved once against MemTotal and SwapTotal."""

    mem_warn_kib: int
    mem_term_kib: int
    mem_kill_kib: int
    swap_term_kib: int
    swap_kill_kib: int


def _yaml_line(doc: Any, loc: tuple[Any, ...]) -> int | None:
    """Best effort: the line of a key path in a YAML node tree."""
    node = doc
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def load_yaml(path: str, text: str) -> tuple[Any, Any]:
    """Parse YAML; return (data, node tree).  Errors name file:line:column."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        raise ConfigError(path, f"invalid YAML: {e.problem or e}", line, col) from None
    except yaml.YAMLError as e:
        raise ConfigError(path, f"invalid YAML: {e}") from None
    return data, node


def validation_to_config_error(path: str, node: Any, err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    text = f"{key}: {msg}"
    if first["type"] != "missing" and not isinstance(value, (dict, list)) and repr(value) not in msg:
        text += f" (got {value!r})"
    return ConfigError(path, text, _yaml_line(node, loc))


def settings_from_text(path: str, text: str, overrides: dict[str, Any] | None = None) -> Settings:
    data, node = load_yaml(path, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"the top level must be a mapping, not {type(data).__name__}", 1)
    merged = _deep_merge(data, overrides or {})
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        raise validation_to_config_error(path, node, e) from None


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load ``path`` (None: defaults only) and apply flag ``overrides``."""
    if path is None:
        return settings_from_text("<flags>", "{}", overrides)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, f"cannot read: {e}") from None
    return settings_from_text(path, text, overrides)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
