"""packaging/config.yaml, installed as /etc/pyoomd/config.yaml: it validates,
it states the real defaults, and every key it sets is explained."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pyoomd.settings.load import load_config
from pyoomd.settings.schema import Settings

CONFIG = Path(__file__).resolve().parent.parent / "packaging" / "config.yaml"

# The keys of the core daemon, documented by the service packaging.  Keys
# added with later features are documented in the same file by their authors.
CORE_KEYS = {
    "memory.term", "memory.kill", "memory.warn", "swap.term", "swap.kill",
    "sampling.max_interval", "sampling.min_interval", "sampling.min_rate_mib_s",
    "sampling.max_rate_mib_s", "sampling.swap_min_rate_mib_s",
    "kill.grace", "kill.kill_timeout", "kill.settle",
    "dry_run", "log_format", "reader", "policy_dirs", "report_top",
}


def leaf_keys(d: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= leaf_keys(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


def test_default_config_validates() -> None:
    settings = load_config(str(CONFIG))
    assert isinstance(settings, Settings)


def test_default_config_states_the_builtin_defaults() -> None:
    """Installing the file changes nothing: each value is the default."""
    settings = load_config(str(CONFIG))
    data = yaml.safe_load(CONFIG.read_text())
    defaults = Settings()
    for top in data:
        assert getattr(settings, top) == getattr(defaults, top), top


def test_default_config_covers_the_core_keys() -> None:
    data = yaml.safe_load(CONFIG.read_text())
    assert CORE_KEYS <= leaf_keys(data)


def test_every_key_is_commented() -> None:
    """Each key line has a comment on it, or a comment block just above it
    (possibly above its parent section)."""
    lines = CONFIG.read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([a-z_]+):", line)
        if not m:
            continue
        if "#" in line:
            continue
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        above = lines[j].strip() if j >= 0 else ""
        # a sub-key may share its comment block with its siblings (e.g. swap.term
        # under a commented "swap:"), but then its parent must be commented
        if above.startswith("#"):
            continue
        parent_ok = bool(m.group(1)) and re.match(r"^\s*[a-z_]+:", above) is not None
        if not parent_ok:
            undocumented.append(line.strip())
    assert not undocumented, undocumented
