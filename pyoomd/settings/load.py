"""Loading the settings: YAML (pyoomd.yamlfile) -> validated ``Settings``,
with errors as ConfigErrors naming the file, the line and the value.

Only the short-lived validation process (``pyoomd.cli.compile_child``) and the
one-shot commands import this module (pydantic, YAML); the running loop
gets its Settings from the compiled plan (``pyoomd.settings.plan``).
"""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from .. import yamlfile
from ..errors import ConfigError
from .schema import Settings

DEFAULT_CONFIG_PATH = "/etc/pyoomd/config.yaml"

T = TypeVar("T")

# One TypeAdapter per class, built on first use (~0.1 s for Settings here).
_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def validate(cls: type[T], data: Any) -> T:
    """``data`` (a mapping, as YAML or flags give it) as a ``cls`` (Settings
    or one of its sections), each field parsed and checked: ``5s`` -> 5.0.
    pydantic's ValidationError (a ValueError) if it is not valid."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    out: T = adapter.validate_python(data)
    return out


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
    """Parse YAML; return (data, node tree).  The policy loader's parser and
    limits (pyoomd.yamlfile): duplicate keys, alias bombs and deep nesting
    are ConfigErrors naming file:line:column."""
    return yamlfile.parse(path, text)


def _message(e: ErrorDetails) -> str:
    """pydantic's message, worded as it is for a pydantic model (the
    messages users saw before the schema became dataclasses)."""
    if e["type"] == "unexpected_keyword_argument":
        return "Extra inputs are not permitted"
    if e["type"] == "dataclass_type":
        return f"Input should be a valid dictionary or instance of {e.get('ctx', {}).get('class_name')}"
    return e["msg"].removeprefix("Value error, ")


def validation_to_config_error(path: str, node: Any, err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    msg = _message(first)
    value = first.get("input")
    text = f"{key}: {msg}"
    if first["type"] != "missing" and not isinstance(value, (dict, list)) and repr(value) not in msg:
        text += f" (got {value!r})"
    return ConfigError(path, text, _yaml_line(node, loc))


def settings_from_dict(data: dict[str, Any], path: str = "<settings>", node: Any = None) -> Settings:
    """Settings from a mapping (YAML's, or a test's); a ConfigError naming
    the key and the value (and its line in ``node``, YAML's node tree)."""
    try:
        return validate(Settings, data)
    except ValidationError as e:
        raise validation_to_config_error(path, node, e) from None


def settings_from_text(path: str, text: str, overrides: dict[str, Any] | None = None) -> Settings:
    data, node = load_yaml(path, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"the top level must be a mapping, not {type(data).__name__}", 1)
    return settings_from_dict(_deep_merge(data, overrides or {}), path, node)


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load ``path`` (None: defaults only) and apply flag ``overrides``."""
    if path is None:
        return settings_from_text("<flags>", "{}", overrides)
    # a regular file (no FIFO, device), trusted, at most 1 MiB (pyoomd.yamlfile)
    return settings_from_text(path, yamlfile.read_trusted(path), overrides)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
