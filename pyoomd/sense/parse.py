"""Pure parsers: bytes read from /proc -> model values.  No I/O here.

Every parser raises only ``ParseError`` on bad input (never IndexError,
ValueError or UnicodeError), naming the path, the field and the raw value.

The meminfo and PSI grammars below are mirrored exactly by ``_reader.c``;
change both together (tests/test_readers.py checks they agree):

- meminfo line: ``Key:<ws>digits[<ws>kB]<ws>``; lines we do not use are not
  checked; a key seen twice keeps its last value.
- PSI line: ``some|full avg10=D avg60=D avg300=D total=N`` with D a decimal
  ``digits[.digits]``; unknown lines are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyoomd.errors import ParseError
from pyoomd.model import MemSample, Pressure, PsiLine

# Whitespace inside a line, as the C reader defines it (newline splits lines).
_WS = b" \t\r\x0b\x0c"
# 18 digits < 1e18 KiB: four of them still sum inside a signed 64-bit integer
# (the C reader's long long), and no machine has an exabyte of RAM.
MAX_KIB_DIGITS = 18
# 19 digits < 2**64: the PSI ``total`` is a u64 count of microseconds.
MAX_TOTAL_DIGITS = 19
# 15 significant digits are exact in a double, so "12.34" -> 1234 / 100 is
# correctly rounded in C exactly as Python's float() rounds it.
MAX_AVG_DIGITS = 15
# Generic integers in stat/status/oom_score: a u64 has at most 20 digits.
MAX_INT_DIGITS = 20
# include/linux/sched.h: "I am a kernel thread".
PF_KTHREAD = 0x00200000


@dataclass(frozen=True, slots=True)
class StatFields:
    """The fields of /proc/PID/stat that pyoomd uses (man 5 proc, stat)."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int
    flags: int
    start_time: int  # clock ticks since boot (field 22)
    vsize: int  # bytes (field 23)
    rss_pages: int  # pages (field 24)

    @property
    def is_kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


@dataclass(frozen=True, slots=True)
class StatusFields:
    """The fields of /proc/PID/status that pyoomd uses."""

    uid: int  # real uid: first field of ``Uid:``
    rss_kib: int  # VmRSS (= RssAnon + RssFile + RssShmem); 0 when absent
    swap_kib: int  # VmSwap; 0 when absent (kernel threads, zombies)
    tgid: int


# -- numbers -------------------------------------------------------------------
def _digits(raw: bytes, path: str, field: str, max_digits: int) -> int:
    """Unsigned ASCII decimal, strictly (int() would accept '+', '_', spaces)."""
    if not raw or len(raw) > max_digits or not raw.isdigit():
        raise ParseError(path, field, raw, "not an unsigned decimal integer")
    return int(raw)


def _int(raw: bytes, path: str, field: str) -> int:
    """Signed ASCII decimal (stat fields, oom_score_adj)."""
    if raw[:1] == b"-":
        return -_digits(raw[1:], path, field, MAX_INT_DIGITS)
    return _digits(raw, path, field, MAX_INT_DIGITS)


def _avg(raw: bytes, path: str, field: str) -> float:
    """PSI average ``digits[.digits]``, at most MAX_AVG_DIGITS digits."""
    whole, dot, frac = raw.partition(b".")
    if (
        not whole.isdigit()
        or (dot and not frac.isdigit())
        or len(whole) + len(frac) > MAX_AVG_DIGITS
    ):
        raise ParseError(path, field, raw, "not a decimal number")
    return float(raw)


# -- meminfo ---------------------------------------------------------------------
# Fields parse_meminfo reads; all other lines are skipped without checks.
_MEMINFO_KEYS = frozenset(
    (b"MemTotal", b"MemFree", b"MemAvailable", b"SwapTotal", b"SwapFree",
     b"Active(file)", b"Inactive(file)", b"SReclaimable")
)


def _meminfo_value(raw: bytes, path: str, field: str) -> int:
    value = raw.strip(_WS)
    if value.endswith(b"kB"):
        value = value[:-2].rstrip(_WS)
    return _digits(value, path, field, MAX_KIB_DIGITS)


def meminfo_fields(data: bytes, path: str = "meminfo") -> dict[str, int]:
    """The fields of _MEMINFO_KEYS present in ``data``, in KiB."""
    out: dict[str, int] = {}
    for line in data.split(b"\n"):
        key, colon, rest = line.partition(b":")
        if colon and key in _MEMINFO_KEYS:
            name = key.decode("ascii")
            out[name] = _meminfo_value(rest, path, name)
    return out


def estimate_available_kib(fields: dict[str, int], path: str = "meminfo") -> int:
    """MemAvailable for kernels before 3.14, which lack it.

    Kernel commit 34e431b0ae39 ("/proc/meminfo: provide estimated available
    memory") says the figure can be derived from MemFree, Active(file),
    Inactive(file) and SReclaimable plus the "low" watermarks of
    /proc/zoneinfo.  The kernel computes
        free - wmark_low + cache - min(cache/2, wmark_low)
                         + srecl - min(srecl/2, wmark_low).
    We do not read zoneinfo, so we subtract nothing we cannot know: wmark_low
    is taken as 0 and the result is an upper bound (a few tens of MiB high on
    typical machines).  Lines absent on very old kernels count as 0; MemFree
    must be there.
    """
    if "MemFree" not in fields:
        raise ParseError(path, "MemAvailable", None, "absent, and MemFree absent to estimate it")
    return (
        fields["MemFree"]
        + fields.get("Active(file)", 0)
        + fields.get("Inactive(file)", 0)
        + fields.get("SReclaimable", 0)
    )


def parse_meminfo(data: bytes, path: str = "meminfo") -> MemSample:
    """/proc/meminfo -> MemSample (psi=None).  Sizes in KiB."""
    fields = meminfo_fields(data, path)
    if "MemTotal" not in fields:
        raise ParseError(path, "MemTotal", None, "absent")
    total_kib = fields["MemTotal"]
    estimated = "MemAvailable" not in fields
    available_kib = estimate_available_kib(fields, path) if estimated else fields["MemAvailable"]
    # systemd-oomd's invariants: a reading that breaks them is not memory state.
    if available_kib > total_kib:
        raise ParseError(path, "MemAvailable", available_kib, f"greater than MemTotal {total_kib}")
    swap_total_kib = fields.get("SwapTotal", 0)
    swap_free_kib = fields.get("SwapFree", 0)
    if swap_free_kib > swap_total_kib:
        raise ParseError(path, "SwapFree", swap_free_kib, f"greater than SwapTotal {swap_total_kib}")
    return MemSample(total_kib, available_kib, swap_total_kib, swap_free_kib, None, estimated)


# -- pressure --------------------------------------------------------------------
_PSI_KEYS = (b"avg10=", b"avg60=", b"avg300=", b"total=")


def _psi_line(tokens: list[bytes], path: str) -> PsiLine:
    kind = tokens[0].decode("ascii")
    if len(tokens) != 5:
        raise ParseError(path, kind, b" ".join(tokens), "expected avg10= avg60= avg300= total=")
    values: list[bytes] = []
    for token, key in zip(tokens[1:], _PSI_KEYS):
        if not token.startswith(key):
            raise ParseError(path, kind, token, f"expected {key.decode()}")
        values.append(token[len(key):])
    name = f"{kind}.avg"
    return PsiLine(
        _avg(values[0], path, name + "10"),
        _avg(values[1], path, name + "60"),
        _avg(values[2], path, name + "300"),
        _digits(values[3], path, f"{kind}.total", MAX_TOTAL_DIGITS),
    )


def parse_pressure(data: bytes, path: str = "pressure/memory") -> Pressure:
    """A PSI file -> Pressure.  ``some`` is required, ``full`` optional."""
    lines: dict[bytes, PsiLine] = {}
    for line in data.split(b"\n"):
        tokens = line.split()
        if tokens and tokens[0] in (b"some", b"full"):
            lines[tokens[0]] = _psi_line(tokens, path)
    if b"some" not in lines:
        raise ParseError(path, "some", data[:80], "absent")
    return Pressure(lines[b"some"], lines.get(b"full"))


# -- /proc/PID/stat --------------------------------------------------------------
# Index of each field after the comm, counting state (field 3 of man 5 proc) as 0.
_STAT_PPID, _STAT_PGID, _STAT_FLAGS = 1, 2, 6
_STAT_START_TIME, _STAT_VSIZE, _STAT_RSS = 19, 20, 21


def _decode(raw: bytes) -> str:
    """Names and command lines are chosen by whoever runs the process."""
    return raw.decode("utf-8", errors="replace")


def parse_stat(data: bytes, path: str = "stat") -> StatFields:
    """/proc/PID/stat -> StatFields.  The comm sits between the FIRST '(' and
    the LAST ')': it may itself hold ')', spaces, newlines or bad UTF-8."""
    open_at = data.find(b"(")
    close_at = data.rfind(b")")
    if open_at < 0 or close_at < open_at:
        raise ParseError(path, "comm", data[:80], "no (comm)")
    rest = data[close_at + 1:].split()
    if len(rest) <= _STAT_RSS:
        raise ParseError(path, "fields", data[close_at + 1:][:80], f"fewer than {_STAT_RSS + 1} after comm")
    state = rest[0]
    if len(state) != 1 or not state.isalpha():
        raise ParseError(path, "state", state, "not one letter")
    return StatFields(
        pid=_int(data[:open_at].strip(), path, "pid"),
        comm=_decode(data[open_at + 1:close_at]),
        state=state.decode("ascii"),
        ppid=_int(rest[_STAT_PPID], path, "ppid"),
        pgid=_int(rest[_STAT_PGID], path, "pgid"),
        flags=_int(rest[_STAT_FLAGS], path, "flags"),
        start_time=_int(rest[_STAT_START_TIME], path, "starttime"),
        vsize=_int(rest[_STAT_VSIZE], path, "vsize"),
        rss_pages=_int(rest[_STAT_RSS], path, "rss"),
    )


# -- /proc/PID/status ------------------------------------------------------------
def _status_kib(raw: bytes, path: str, field: str) -> int:
    return _meminfo_value(raw, path, field)


def parse_status(data: bytes, path: str = "status") -> StatusFields:
    """/proc/PID/status -> StatusFields (Uid and Tgid required)."""
    uid: int | None = None
    tgid: int | None = None
    rss_kib = swap_kib = 0
    for line in data.split(b"\n"):
        key, colon, rest = line.partition(b":")
        if not colon:
            continue
        if key == b"Uid":
            real = rest.split()[:1]
            uid = _digits(real[0] if real else b"", path, "Uid", MAX_INT_DIGITS)
        elif key == b"Tgid":
            tgid = _digits(rest.strip(_WS), path, "Tgid", MAX_INT_DIGITS)
        elif key == b"VmRSS":
            rss_kib = _status_kib(rest, path, "VmRSS")
        elif key == b"VmSwap":
            swap_kib = _status_kib(rest, path, "VmSwap")
    if uid is None:
        raise ParseError(path, "Uid", None, "absent")
    if tgid is None:
        raise ParseError(path, "Tgid", None, "absent")
    return StatusFields(uid, rss_kib, swap_kib, tgid)


def parse_status_uid_swap(data: bytes, path: str = "status") -> tuple[int, int]:
    """(real uid, VmSwap KiB) of /proc/PID/status."""
    status = parse_status(data, path)
    return status.uid, status.swap_kib


# -- small files -----------------------------------------------------------------
def parse_int_file(data: bytes, path: str, field: str) -> int:
    """A file holding one signed integer (oom_score, oom_score_adj)."""
    return _int(data.strip(), path, field)


def parse_cmdline(data: bytes) -> str:
    """/proc/PID/cmdline: NUL-separated argv -> one space-separated line."""
    return _decode(data.replace(b"\0", b" ").rstrip())


def parse_comm(data: bytes) -> str:
    """/proc/PID/comm: the name, without the kernel's trailing newline."""
    return _decode(data[:-1] if data.endswith(b"\n") else data)


def parse_cgroup(data: bytes, path: str = "cgroup") -> tuple[str | None, str | None]:
    """/proc/PID/cgroup -> (v2 path, v1 memory controller path).

    v2 is the line ``0::/path``; v1 memory is ``N:ctrl,...:/path`` whose
    controller list holds ``memory``.  Paths keep non-UTF-8 bytes through
    surrogateescape, so they still name the right directory.
    """
    v2: str | None = None
    v1_memory: str | None = None
    for line in data.split(b"\n"):
        if not line:
            continue
        parts = line.split(b":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            raise ParseError(path, "line", line, "expected ID:controllers:path")
        hier, controllers, cg_path = parts
        text = cg_path.decode("utf-8", errors="surrogateescape")
        if hier == b"0" and not controllers:
            v2 = text
        elif b"memory" in controllers.split(b","):
            v1_memory = text
    return v2, v1_memory


def parse_status_mem(data: bytes, path: str = "status") -> tuple[int, int, int, int]:
    """(VmSize, RssAnon, RssFile, RssShmem) KiB from /proc/PID/status, for the
    kernel-style kill line; absent fields are 0."""
    wanted = {b"VmSize": 0, b"RssAnon": 0, b"RssFile": 0, b"RssShmem": 0}
    for line in data.split(b"\n"):
        key, colon, rest = line.partition(b":")
        if colon and key in wanted:
            wanted[key] = _status_kib(rest, path, key.decode())
    return wanted[b"VmSize"], wanted[b"RssAnon"], wanted[b"RssFile"], wanted[b"RssShmem"]
