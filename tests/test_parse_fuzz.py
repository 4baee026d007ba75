"""Adversarial bytes into every parser: a result or ParseError, nothing else.
And the C parser agrees with parse.py on the same random input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fuzzing import fuzz
from helpers import EXT, needs_cffi
from hypothesis import given
from hypothesis import strategies as st

from pyoomd.errors import ParseError
from pyoomd.model import MemSample, Pressure, PsiLine
from pyoomd.sense import parse

# dev: fast enough for every test run; ci (tests/fuzzing.py): 10,000.
FUZZ = fuzz(100)
# The C/Python agreement is the check most worth its time.
FUZZ_AGREE = fuzz(300, 1000)  # ci: the C parsers also see the 10,000 of test_parser_never_raises_other_errors

# Pieces real files are made of, so random inputs often get deep into the parsers.
TOKENS = [
    b"MemTotal:", b"MemFree:", b"MemAvailable:", b"SwapTotal:", b"SwapFree:", b"Active(file):",
    b"Inactive(file):", b"SReclaimable:", b"Cached:", b"some", b"full", b"avg10=", b"avg60=", b"avg300=",
    b"total=", b"kB", b" ", b"\t", b"\n", b"\r", b"\0", b":", b"(", b")", b"-", b".", b"0", b"1", b"42",
    b"999999999999999999", b"18446744073709551615", b"12.34", b"Uid:", b"Tgid:", b"VmRSS:", b"VmSwap:",
    b"0::/", b"memory", b",", b"\xe2\x82", b"\xff", b"Z", b"S",
]
proc_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join),
)


def digits(max_value: int) -> st.SearchStrategy[bytes]:
    return st.integers(0, max_value).map(lambda v: str(v).encode())


def mostly(valid: st.SearchStrategy[bytes], broken: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """``valid`` 19 times in 20, so whole files often parse."""
    return st.integers(0, 19).flatmap(lambda n: broken if n == 0 else valid)


@st.composite
def meminfo_like(draw: st.DrawFn) -> bytes:
    """Mostly valid meminfo, with now and then a mutated value or a missing line."""
    keys = [b"MemTotal", b"MemFree", b"MemAvailable", b"SwapTotal", b"SwapFree", b"Active(file)",
            b"Inactive(file)", b"SReclaimable", b"Cached"]
    lines = []
    for key in draw(st.permutations(keys)):
        if draw(st.integers(0, 9)) == 0:
            continue
        # Totals mostly above the rest, so the invariants often hold.
        valid = st.integers(10**8, 10**9).map(lambda v: str(v).encode()) if b"Total" in key else digits(10**7)
        value = draw(mostly(valid, st.one_of(digits(10**19), st.sampled_from(TOKENS), st.binary(max_size=4))))
        sep = draw(st.sampled_from([b" ", b"\t", b"   ", b""]))
        unit = draw(mostly(st.sampled_from([b" kB", b"kB", b"", b" kB "]), st.sampled_from([b" KB", b"k B"])))
        lines.append(key + b":" + sep + value + unit)
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))


@st.composite
def psi_like(draw: st.DrawFn) -> bytes:
    lines = []
    for kind in draw(st.lists(st.sampled_from([b"some", b"full", b"cpu"]), max_size=3)):
        parts = [kind]
        for key in (b"avg10=", b"avg60=", b"avg300="):
            whole = draw(digits(10**8))
            fracs = st.sampled_from([b"", b".0", b".05", b".123456"])
            frac = draw(mostly(fracs, st.sampled_from([b".", b"..1"])))
            parts.append(key + whole + frac)
        parts.append(b"total=" + draw(mostly(digits(10**20), st.sampled_from(TOKENS))))
        if draw(st.integers(0, 5)) == 0:
            parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(TOKENS)))
        lines.append(draw(st.sampled_from([b" ", b"  ", b"\t"])).join(parts))
    return b"\n".join(lines) + b"\n"


def result_or_parse_error(fn: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return fn(data)
    except ParseError as e:
        return e


PARSERS: dict[str, Callable[[bytes], Any]] = {
    "meminfo": parse.parse_meminfo,
    "pressure": parse.parse_pressure,
    "stat": parse.parse_stat,
    "status": parse.parse_status,
    "status_uid_swap": parse.parse_status_uid_swap,
    "int_file": lambda d: parse.parse_int_file(d, "oom_score_adj", "oom_score_adj"),
    "cmdline": parse.parse_cmdline,
    "comm": parse.parse_comm,
    "cgroup": parse.parse_cgroup,
}


@FUZZ
@given(data=st.one_of(proc_bytes, meminfo_like(), psi_like()))
def test_parser_never_raises_other_errors(data: bytes) -> None:
    # Each example goes through every parser: drawing it costs ~10x parsing
    # it, so each parser sees as many examples as the profile runs.
    for name in sorted(PARSERS):
        result_or_parse_error(PARSERS[name], data)
    if EXT is not None:  # and the C parsers agree on it
        assert c_meminfo(data) == py_or_none(parse.parse_meminfo, data)
        assert c_pressure(data) == py_or_none(parse.parse_pressure, data)


STAT_TOKENS = st.sampled_from([b"0", b"1", b"-1", b"4194304", b"2129984", b"x", b"R", b"Z"])


@fuzz(100, 3000)  # ci: parse_stat also sees the 10,000 of the test above
@given(
    pid=st.integers(0, 2**22),
    comm=st.binary(max_size=20),
    tail=st.lists(STAT_TOKENS, max_size=40),
)
def test_stat_with_any_comm(pid: int, comm: bytes, tail: list[bytes]) -> None:
    data = b"%d (%s) %s" % (pid, comm, b" ".join(tail))
    got = result_or_parse_error(parse.parse_stat, data)
    if not isinstance(got, ParseError):
        # The tail holds no ')': the last one closes the comm, whatever the comm holds.
        assert (got.pid, got.comm) == (pid, comm.decode("utf-8", "replace"))


# -- C and Python agree ----------------------------------------------------------


def c_meminfo(data: bytes) -> MemSample | None:
    assert EXT is not None
    out = EXT.ffi.new("struct pyoomd_sample *")
    if EXT.lib.pyoomd_parse_meminfo(data, len(data), out) != 0:
        return None
    estimated = not out.has_available
    return MemSample(out.mem_total, out.mem_available, out.swap_total, out.swap_free, None, estimated)


def c_pressure(data: bytes) -> Pressure | None:
    assert EXT is not None
    s = EXT.ffi.new("struct pyoomd_sample *")
    if EXT.lib.pyoomd_parse_psi(data, len(data), s) != 0:
        return None
    full = PsiLine(s.full10, s.full60, s.full300, s.full_total) if s.has_full else None
    return Pressure(PsiLine(s.some10, s.some60, s.some300, s.some_total), full)


def py_or_none(fn: Callable[[bytes], Any], data: bytes) -> Any:
    got = result_or_parse_error(fn, data)
    return None if isinstance(got, ParseError) else got


@needs_cffi
@FUZZ_AGREE
@given(data=st.one_of(meminfo_like(), proc_bytes))
def test_c_meminfo_agrees(data: bytes) -> None:
    assert c_meminfo(data) == py_or_none(parse.parse_meminfo, data)


@needs_cffi
@FUZZ_AGREE
@given(data=st.one_of(psi_like(), proc_bytes))
def test_c_pressure_agrees(data: bytes) -> None:
    assert c_pressure(data) == py_or_none(parse.parse_pressure, data)
