"""Pure parsers against fixture files and hand-written edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyoomd.errors import ParseError
from pyoomd.model import MemSample, Pressure, PsiLine
from pyoomd.sense.parse import (
    PF_KTHREAD,
    parse_cgroup,
    parse_cmdline,
    parse_comm,
    parse_int_file,
    parse_meminfo,
    parse_pressure,
    parse_stat,
    parse_status,
    parse_status_uid_swap,
)

FIXTURES = Path(__file__).parent / "fixtures"
PROC = FIXTURES / "proc"


def meminfo(name: str) -> bytes:
    return (FIXTURES / "meminfo" / name).read_bytes()


def pressure(name: str) -> bytes:
    return (FIXTURES / "pressure" / name).read_bytes()


def pid_file(pid: int, name: str) -> bytes:
    return (PROC / str(pid) / name).read_bytes()


# -- meminfo ---------------------------------------------------------------------
def test_meminfo_modern() -> None:
    assert parse_meminfo(meminfo("modern_6x.txt")) == MemSample(16318708, 6822140, 8388604, 7340028)


def test_meminfo_old_kernel_estimates_available() -> None:
    sample = parse_meminfo(meminfo("old_3_10_no_memavailable.txt"))
    # MemFree + Active(file) + Inactive(file) + SReclaimable
    assert sample.mem_available_kib == 201536 + 711420 + 765800 + 150000
    assert sample.available_estimated is True


def test_meminfo_no_swap_and_missing_swap_lines() -> None:
    for name in ("no_swap.txt", "no_swap_lines.txt"):
        sample = parse_meminfo(meminfo(name))
        assert (sample.swap_total_kib, sample.swap_free_kib) == (0, 0)
        assert sample.swap_free_pct == 0.0


def test_meminfo_value_without_kb_and_no_final_newline() -> None:
    assert parse_meminfo(meminfo("low_memory.txt")).swap_free_kib == 120000
    assert parse_meminfo(meminfo("minimal.txt")) == MemSample(1000, 10, 0, 0)


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("bad_nonnumeric.txt", "MemAvailable"),
        ("bad_negative.txt", "SwapFree"),
        ("bad_empty_value.txt", "MemTotal"),
        ("bad_missing_total.txt", "MemTotal"),
        ("bad_available_gt_total.txt", "MemAvailable"),
        ("bad_swapfree_gt_total.txt", "SwapFree"),
        ("bad_old_no_memfree.txt", "MemAvailable"),
        ("bad_too_many_digits.txt", "MemTotal"),
        ("bad_empty.txt", "MemTotal"),
        ("bad_binary.txt", "MemTotal"),
    ],
)
def test_meminfo_malformed_names_field(name: str, field: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_meminfo(meminfo(name), path=name)
    assert info.value.field == field
    assert info.value.path == name


def test_meminfo_error_carries_raw_value() -> None:
    with pytest.raises(ParseError) as info:
        parse_meminfo(meminfo("bad_nonnumeric.txt"))
    assert info.value.raw == b"68x2140"


def test_meminfo_last_duplicate_wins() -> None:
    assert parse_meminfo(b"MemTotal: 10 kB\nMemAvailable: 5 kB\nMemAvailable: 7 kB\n").mem_available_kib == 7


# -- pressure --------------------------------------------------------------------
def test_pressure_busy() -> None:
    assert parse_pressure(pressure("busy.txt")) == Pressure(
        PsiLine(41.27, 12.05, 3.91, 187654321), PsiLine(30.10, 8.75, 2.02, 98765432)
    )


def test_pressure_some_only() -> None:
    assert parse_pressure(pressure("some_only.txt")) == Pressure(PsiLine(1.5, 0.75, 0.1, 123456), None)


@pytest.mark.parametrize(
    "name",
    ["bad_missing_some.txt", "bad_avg.txt", "bad_extra_field.txt", "bad_total.txt", "bad_key_order.txt",
     "bad_empty.txt"],
)
def test_pressure_malformed(name: str) -> None:
    with pytest.raises(ParseError):
        parse_pressure(pressure(name))


# -- stat --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pid", "comm"),
    [(100, "bash"), (201, "foo) Z "), (202, "a\nb"), (203, "((x)) (y"), (204, "price-in-eur\ufffd")],
)
def test_stat_hostile_names(pid: int, comm: str) -> None:
    stat = parse_stat(pid_file(pid, "stat"))
    assert (stat.pid, stat.comm, stat.ppid) == (pid, comm, 100 if pid != 100 else 1)
    assert stat.state in ("S", "R")  # 201's "Z" belongs to its name
    assert not stat.is_kernel_thread


def test_stat_fields() -> None:
    stat = parse_stat(pid_file(201, "stat"))
    assert (stat.pgid, stat.start_time, stat.vsize, stat.rss_pages) == (201, 6000, 4096000, 25600)


def test_stat_kernel_thread_and_zombie() -> None:
    kthreadd = parse_stat(pid_file(2, "stat"))
    assert kthreadd.is_kernel_thread and kthreadd.flags & PF_KTHREAD
    assert parse_stat(pid_file(205, "stat")).state == "Z"


@pytest.mark.parametrize(
    "data",
    [b"", b"12 (x", b"12 x) S 1", b"12 (x) S 1 2 3", b"x (y) S" + b" 1" * 30, b"1 (y) SS" + b" 1" * 30,
     b"1 (y) S" + b" 1" * 5 + b" 0x10" + b" 1" * 30],
)
def test_stat_malformed(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_stat(data)


# -- status ------------------------------------------------------------------------
def test_status_user_process() -> None:
    status = parse_status(pid_file(100, "status"))
    assert (status.uid, status.rss_kib, status.swap_kib, status.tgid) == (1000, 5200, 128, 100)
    assert parse_status_uid_swap(pid_file(203, "status")) == (1001, 64)


def test_status_kernel_thread_and_zombie_have_no_vm_lines() -> None:
    for pid in (2, 205):
        status = parse_status(pid_file(pid, "status"))
        assert (status.rss_kib, status.swap_kib) == (0, 0)


@pytest.mark.parametrize(
    "data", [b"", b"Uid:\t1000\n", b"Tgid:\t1\n", b"Tgid:\t1\nUid:\n", b"Tgid:\t1\nUid:\tx\t1\n",
             b"Tgid:\t1\nUid:\t1\nVmSwap:\t-5 kB\n"]
)
def test_status_malformed(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_status(data)


# -- small files -------------------------------------------------------------------
def test_int_files() -> None:
    assert parse_int_file(pid_file(201, "oom_score"), "oom_score", "oom_score") == 870
    assert parse_int_file(pid_file(206, "oom_score_adj"), "oom_score_adj", "oom_score_adj") == -1000
    for bad in (b"", b"1 2\n", b"+5\n", b"1_000\n", b"--1\n", b"\xd9\xa1\n"):
        with pytest.raises(ParseError):
            parse_int_file(bad, "oom_score_adj", "oom_score_adj")


def test_cmdline_and_comm() -> None:
    assert parse_cmdline(pid_file(1, "cmdline")) == "/sbin/init splash"
    assert parse_cmdline(pid_file(206, "cmdline")) == "sshd: /usr/sbin/sshd -D"
    assert parse_cmdline(pid_file(205, "cmdline")) == ""
    assert parse_cmdline(pid_file(204, "cmdline")) == "price-in-eur\u20ac"
    assert parse_comm(pid_file(202, "comm")) == "a\nb"
    assert parse_comm(pid_file(204, "comm")) == "price-in-eur\ufffd"


def test_cgroup() -> None:
    assert parse_cgroup(pid_file(100, "cgroup")) == ("/user.slice/user-1000.slice/session-2.scope", None)
    assert parse_cgroup(pid_file(203, "cgroup")) == ("/user.slice", "/legacy/x")
    v2, _ = parse_cgroup(pid_file(204, "cgroup"))
    assert v2 is not None and v2.encode("utf-8", "surrogateescape") == b"/user.slice/\xff\xfe.scope"
    assert parse_cgroup(b"4:cpu,memory:/a:b\n") == (None, "/a:b")
    assert parse_cgroup(b"") == (None, None)
    for bad in (b"garbage\n", b"x::/\n", b"0:/\n"):
        with pytest.raises(ParseError):
            parse_cgroup(bad)
