"""Config: amounts, durations, defaults, strict YAML, compile()."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyoomd.errors import ConfigError
from pyoomd.settings.amounts import Amount, Thresholds, parse_amount, parse_duration_s
from pyoomd.settings.load import load_config, settings_from_text
from pyoomd.settings.schema import MemoryConfig, Settings, SwapConfig

GIB_KIB = 1024 * 1024


# -- parse_amount ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10%", Amount(pct=10.0)),
        ("0%", Amount(pct=0.0)),
        ("100%", Amount(pct=100.0)),
        ("2.5%", Amount(pct=2.5)),
        ("2G", Amount(kib=2 * GIB_KIB)),
        ("2GiB", Amount(kib=2 * GIB_KIB)),
        ("2gb", Amount(kib=2 * GIB_KIB)),
        ("512M", Amount(kib=512 * 1024)),
        ("300K", Amount(kib=300)),
        ("300kB", Amount(kib=300)),
        ("1T", Amount(kib=1024**3)),
        ("1.5G", Amount(kib=1572864)),
        ("1048576", Amount(kib=1048576)),  # bare number = KiB, as earlyoom's -M
        (1048576, Amount(kib=1048576)),  # YAML int
        (0, Amount(kib=0)),
        (" 64 M ", Amount(kib=65536)),
    ],
)
def test_parse_amount(raw: object, expected: Amount) -> None:
    assert parse_amount(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "abc", "10 %%", "G", "2X", "512B", "1.5.5G", "-5", "-5%", "101%", "150%", "nan%", "inf%",
     -1, -0.5, True, False, None],
)
def test_parse_amount_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_amount(raw)


def test_parse_amount_error_names_raw_text() -> None:
    with pytest.raises(ValueError, match="150%"):
        parse_amount("150%")
    with pytest.raises(ValueError, match="2X"):
        parse_amount("2X")


def test_amount_resolve_pct_kib_and_lower_wins() -> None:
    total = 16 * GIB_KIB
    assert Amount(pct=10.0).resolve_kib(total) == int(total * 0.1)
    assert Amount(kib=GIB_KIB).resolve_kib(total) == GIB_KIB
    # both: 10% of 16 GiB = 1.6 GiB > 1 GiB -> 1 GiB; on 4 GiB, 10% = 0.4 GiB wins
    both = Amount(pct=10.0, kib=GIB_KIB)
    assert both.resolve_kib(total) == GIB_KIB
    assert both.resolve_kib(4 * GIB_KIB) == int(4 * GIB_KIB * 0.1)
    assert Amount().resolve_kib(total) == 0


# -- parse_duration_s ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [(5, 5.0), (0.25, 0.25), ("5", 5.0), ("5s", 5.0), ("250ms", 0.25), ("2m", 120.0), ("1.5s", 1.5),
     ("0", 0.0), (" 2 ms ", 0.002)],
)
def test_parse_duration(raw: object, expected: float) -> None:
    assert parse_duration_s(raw) == pytest.approx(expected)


@pytest.mark.parametrize("raw", ["", "fast", "1h", "-1", "-1s", "5 sec", -1, -0.1, True, None])
def test_parse_duration_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(raw)


# -- defaults ------------------------------------------------------------------------
def test_settings_defaults_match_earlyoom() -> None:
    s = Settings()
    assert s.memory.term == Amount(pct=10.0)
    assert s.memory.kill == Amount(pct=5.0)
    assert s.memory.warn == Amount(pct=20.0)
    assert s.swap.term == Amount(pct=10.0)
    assert s.swap.kill == Amount(pct=5.0)
    assert s.dry_run is False
    assert s.sampling.min_interval <= s.sampling.max_interval
    # an empty file and no file give the same defaults
    assert settings_from_text("empty.yaml", "") == s
    assert load_config(None) == s


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.dry_run = True  # type: ignore[misc]


def test_yaml_values_parsed() -> None:
    text = (
        "memory:\n  term: 2G\n  kill: 512M\n  warn: 30%\n"
        "swap:\n  term: 20%\n  kill: 0%\n"
        "sampling:\n  max_interval: 500ms\n  min_interval: 5ms\n"
        "kill:\n  grace: 2s\n"
        "dry_run: true\n"
    )
    s = settings_from_text("c.yaml", text)
    assert s.memory.term == Amount(kib=2 * GIB_KIB)
    assert s.memory.kill == Amount(kib=512 * 1024)
    assert s.memory.warn == Amount(pct=30.0)
    assert s.swap.term == Amount(pct=20.0)
    assert s.swap.kill == Amount(pct=0.0)
    assert s.sampling.max_interval == pytest.approx(0.5)
    assert s.sampling.min_interval == pytest.approx(0.005)
    assert s.kill.grace == pytest.approx(2.0)
    assert s.dry_run is True


# -- strict YAML: errors with file:line -----------------------------------------------
def test_unknown_nested_key_names_file_and_line() -> None:
    text = "memory:\n  term: 10%\n  bogus: 1\n"
    with pytest.raises(ConfigError) as ei:
        settings_from_text("/etc/pyoomd/c.yaml", text)
    e = ei.value
    assert (e.file, e.line) == ("/etc/pyoomd/c.yaml", 3)
    assert "memory.bogus" in e.message
    assert str(e).startswith("/etc/pyoomd/c.yaml:3:")


def test_unknown_top_level_key_names_line() -> None:
    text = "dry_run: false\n\nthreshold: 5\n"
    with pytest.raises(ConfigError) as ei:
        settings_from_text("c.yaml", text)
    assert ei.value.line == 3
    assert "threshold" in ei.value.message


def test_bad_value_names_key_line_and_raw() -> None:
    text = "memory:\n  term: 10%\n  kill: 150%\n"
    with pytest.raises(ConfigError) as ei:
        settings_from_text("c.yaml", text)
    assert ei.value.line == 3
    assert "memory.kill" in ei.value.message
    assert "150%" in ei.value.message


def test_bad_yaml_gives_line_and_column() -> None:
    text = "memory:\n  term: 10%\n  kill: [5%\n"
    with pytest.raises(ConfigError) as ei:
        settings_from_text("c.yaml", text)
    e = ei.value
    assert e.file == "c.yaml"
    assert e.line is not None and e.column is not None
    assert e.line >= 3
    assert f"c.yaml:{e.line}:{e.column}:" in str(e)
    assert "invalid YAML" in e.message


def test_bad_yaml_tab_indent() -> None:
    with pytest.raises(ConfigError) as ei:
        settings_from_text("c.yaml", "memory:\n\tterm: 10%\n")
    assert ei.value.line == 2
    assert ei.value.column is not None


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_top_level(text: str) -> None:
    with pytest.raises(ConfigError) as ei:
        settings_from_text("c.yaml", text)
    assert "mapping" in ei.value.message
    assert ei.value.line == 1


def test_section_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as ei:
        settings_from_text("c.yaml", "dry_run: false\nmemory: 5\n")
    assert ei.value.line == 2
    assert ei.value.message.startswith("memory")


def test_sampling_order_checked() -> None:
    with pytest.raises(ConfigError) as ei:
        settings_from_text("c.yaml", "sampling:\n  min_interval: 2s\n  max_interval: 1s\n")
    assert "min_interval" in ei.value.message


def test_infinite_amount_is_a_config_error() -> None:
    # YAML `.inf` is a float; int(inf) raises OverflowError, which must not
    # escape as a traceback: every bad value is a ConfigError naming the key.
    with pytest.raises(ConfigError) as ei:
        settings_from_text("c.yaml", "memory:\n  term: .inf\n")
    assert ei.value.line == 2


@pytest.mark.parametrize("key", ["sampling:\n  max_interval", "kill:\n  grace"])
def test_nan_duration_is_a_config_error(key: str) -> None:
    # NaN passes `value < 0` and `min_interval > max_interval`; a NaN sleep
    # makes time.sleep raise in the loop.
    with pytest.raises(ConfigError):
        settings_from_text("c.yaml", f"{key}: .nan\n")


@pytest.mark.parametrize(
    ("key", "value"),
    [("swap_min_rate_mib_s", "0"), ("swap_min_rate_mib_s", "-5"), ("swap_min_rate_mib_s", ".nan"),
     ("min_rate_mib_s", ".nan")],
)
def test_fill_rate_floors_must_be_positive(key: str, value: str) -> None:
    # min_rate_mib_s is checked for > 0 (NaN slips through that check); the
    # swap floor is not checked at all.  Either way sleep_for then divides by
    # an assumed rate of 0 and the loop dies with ZeroDivisionError.
    with pytest.raises(ConfigError):
        settings_from_text("c.yaml", f"sampling:\n  {key}: {value}\n")


def test_overrides_merge_over_file() -> None:
    text = "memory:\n  term: 20%\n  kill: 10%\nkill:\n  grace: 9s\n"
    s = settings_from_text("c.yaml", text, {"memory": {"kill": Amount(pct=3.0)}, "dry_run": True})
    assert s.memory.term == Amount(pct=20.0)  # kept from the file
    assert s.memory.kill == Amount(pct=3.0)  # replaced by the flag
    assert s.kill.grace == pytest.approx(9.0)
    assert s.dry_run is True


# -- load_config ------------------------------------------------------------------------
def test_load_config_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as ei:
        load_config(str(path))
    assert ei.value.file == str(path)
    assert str(path) in str(ei.value)


def test_load_config_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("memory:\n  term: 15%\n")
    assert load_config(str(path)).memory.term == Amount(pct=15.0)


def test_load_config_unknown_key_names_real_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("# comment\nswap:\n  kil: 5%\n")
    with pytest.raises(ConfigError) as ei:
        load_config(str(path))
    assert str(ei.value).startswith(f"{path}:3:")


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"memory:\n  term: \xff\xfe\n")
    with pytest.raises(ConfigError) as ei:
        load_config(str(path))
    assert ei.value.file == str(path)


# -- compile ----------------------------------------------------------------------------
MEM_TOTAL = 16 * GIB_KIB
SWAP_TOTAL = 8 * GIB_KIB


def test_compile_defaults() -> None:
    th = Settings().compile(MEM_TOTAL, SWAP_TOTAL)
    assert th == Thresholds(
        mem_warn_kib=int(MEM_TOTAL * 0.20),
        mem_term_kib=int(MEM_TOTAL * 0.10),
        mem_kill_kib=int(MEM_TOTAL * 0.05),
        swap_term_kib=int(SWAP_TOTAL * 0.10),
        swap_kill_kib=int(SWAP_TOTAL * 0.05),
    )


def test_compile_no_swap_gives_zero_swap_levels() -> None:
    th = Settings().compile(MEM_TOTAL, 0)
    assert (th.swap_term_kib, th.swap_kill_kib) == (0, 0)


def test_compile_sizes_are_kib() -> None:
    s = settings_from_text("c.yaml", "memory:\n  term: 1G\n  kill: 256M\n  warn: 2G\n")
    th = s.compile(MEM_TOTAL, SWAP_TOTAL)
    assert (th.mem_warn_kib, th.mem_term_kib, th.mem_kill_kib) == (2 * GIB_KIB, GIB_KIB, 256 * 1024)


def test_compile_both_given_lower_wins() -> None:
    s = Settings(memory=MemoryConfig(term=Amount(pct=10.0, kib=GIB_KIB), kill=Amount(pct=5.0, kib=GIB_KIB // 2)))
    th = s.compile(MEM_TOTAL, SWAP_TOTAL)  # 10% = 1.6 GiB > 1 GiB
    assert (th.mem_term_kib, th.mem_kill_kib) == (GIB_KIB, GIB_KIB // 2)
    small = s.compile(4 * GIB_KIB, SWAP_TOTAL)  # 10% = 0.4 GiB < 1 GiB
    assert (small.mem_term_kib, small.mem_kill_kib) == (int(4 * GIB_KIB * 0.1), int(4 * GIB_KIB * 0.05))


def test_compile_kill_above_term_is_error() -> None:
    s = settings_from_text("c.yaml", "memory:\n  term: 5%\n  kill: 10%\n")
    with pytest.raises(ConfigError, match="memory.kill"):
        s.compile(MEM_TOTAL, SWAP_TOTAL)
    s = Settings(swap=SwapConfig(term=Amount(kib=1024), kill=Amount(kib=2048)))
    with pytest.raises(ConfigError, match="swap.kill"):
        s.compile(MEM_TOTAL, SWAP_TOTAL)


def test_compile_kill_equal_term_allowed() -> None:
    th = settings_from_text("c.yaml", "memory:\n  term: 5%\n  kill: 5%\n").compile(MEM_TOTAL, SWAP_TOTAL)
    assert th.mem_term_kib == th.mem_kill_kib


def test_compile_kill_above_term_mixed_units() -> None:
    # 10% of 16 GiB = 1.6 GiB for TERM, but KILL at 2 GiB is worse than TERM
    s = settings_from_text("c.yaml", "memory:\n  term: 10%\n  kill: 2G\n")
    with pytest.raises(ConfigError):
        s.compile(MEM_TOTAL, SWAP_TOTAL)


def test_compile_warn_at_or_below_term_is_placed_above_it() -> None:
    # warn default 20% < term 30%: WARN goes 10 % of MemTotal above TERM (the
    # default distance), never collapses onto it, and says what was asked.
    s = settings_from_text("c.yaml", "memory:\n  term: 30%\n  kill: 10%\n")
    th = s.compile(MEM_TOTAL, SWAP_TOTAL)
    assert th.mem_term_kib == int(MEM_TOTAL * 0.30)
    assert th.mem_warn_kib == th.mem_term_kib + int(MEM_TOTAL * 0.10)
    assert th.mem_warn_asked_kib == int(MEM_TOTAL * 0.20)
    assert th.mem_warn_kib > th.mem_term_kib >= th.mem_kill_kib
    # equal counts as collapsed too
    th = settings_from_text("c.yaml", "memory:\n  term: 2G\n  kill: 1G\n  warn: 2G\n").compile(MEM_TOTAL, SWAP_TOTAL)
    assert th.mem_warn_kib == 2 * GIB_KIB + int(MEM_TOTAL * 0.10) and th.mem_warn_asked_kib == 2 * GIB_KIB


def test_compile_warn_raised_stays_below_mem_total() -> None:
    # an absolute -M that is high for a small machine: TERM at 95 % of it
    th = settings_from_text("c.yaml", "memory:\n  term: 95%\n  kill: 90%\n").compile(MEM_TOTAL, SWAP_TOTAL)
    assert th.mem_term_kib < th.mem_warn_kib < MEM_TOTAL
    assert th.mem_warn_kib == MEM_TOTAL - 1


def test_compile_warn_above_term_is_kept_as_asked() -> None:
    th = Settings().compile(MEM_TOTAL, SWAP_TOTAL)
    assert th.mem_warn_asked_kib is None and th.mem_warn_kib == int(MEM_TOTAL * 0.20)
