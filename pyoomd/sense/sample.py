"""Sampler: one reading of /proc/meminfo (+ /proc/pressure/memory) per call.

Two backends give the same MemSample for the same files:

- ``cffi``: the C reader in ``_reader.c`` (the hot path);
- ``python``: ``os.pread`` over kept-open descriptors + ``parse.py``.

Choice: an explicit ``backend`` argument wins unless it is ``"auto"``; then
the ``PYOOMD_READER`` environment variable (auto|cffi|python); then auto =
cffi when the extension is importable, else python.  ``Sampler.backend``
reports the one chosen.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import math
import os
import select
import struct
import time
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from pyoomd.errors import ParseError, StartupError
from pyoomd.interval import RATE_SAFETY, RATE_STEP_S, RATE_WINDOW_S, PeakRate, next_interval_s
from pyoomd.model import MemSample, Pressure, PsiLine
from pyoomd.sense.parse import parse_meminfo, parse_pressure
from pyoomd.sense.procfs import Procfs

if TYPE_CHECKING:  # annotations only: typing_extensions is not a runtime dependency
    from typing_extensions import Self

ENV_VAR = "PYOOMD_READER"
BACKENDS = ("auto", "cffi", "python")
# EX_SOFTWARE (sysexits.h): the installed package lacks its own extension.
EXIT_NO_EXTENSION = 69  # EX_UNAVAILABLE: the README's "requested reader backend is unavailable"
# /proc/meminfo is ~1.5 KiB on 6.x kernels: one pread of 8 KiB reads it whole.
READ_CHUNK = 8192
# Far above any meminfo or PSI file (same limit as _reader.c's READ_MAX).
READ_MAX = 1 << 20
# struct pyoomd_sample of _reader.c in native layout: 8 long long, 4 int
# (has_available, has_psi, has_full, psi_same), then 6 double and 2 unsigned
# long long (the PSI values).  Checked against ffi.sizeof.
_HEAD_STRUCT = struct.Struct("@8q4i")
_PSI_STRUCT = struct.Struct("@6d2Q")
_SAMPLE_SIZE = _HEAD_STRUCT.size + _PSI_STRUCT.size
_tuple_new = tuple.__new__


def make_memsample(total: int, avail: int, swap_total: int, swap_free: int, psi: Pressure | None,
                   estimated: bool) -> MemSample:
    """MemSample(...) without its Python-level ``__new__``: the named
    tuple's own fast constructor (what ``MemSample._make`` does)."""
    return _tuple_new(MemSample, (total, avail, swap_total, swap_free, psi, estimated))

# Why an idle wait returned (the IDLE_ codes of _reader.c, by number).
IDLE_REASONS = ("?", "gate", "deadline", "psi", "wake", "signal")


@dataclasses.dataclass(frozen=True, slots=True)
class IdleResult:
    """What ``Sampler.idle_wait`` returns.  ``sample`` is a whole sample taken
    at the return (the one at or below the gate for ``gate``), to be judged
    as any other.  ``reason``: gate | deadline | psi | wake | signal.
    ``revents``: the PSI fd's poll events for ``psi``.  ``prev_age_s`` and
    ``prev_available_kib``: the sample before it (None when there was none),
    so the caller's fill-rate history sees the last step of a decline."""

    sample: MemSample
    reason: str
    revents: int = 0
    samples: int = 0
    prev_age_s: float | None = None
    prev_available_kib: int = 0
    pings: int = 0  # watchdog pings sent from the wait (see IdleParams.notify_fd)
    notify_last_s: float = 0.0  # when the last one left (time.monotonic)


@dataclasses.dataclass(frozen=True, slots=True)
class IdleParams:
    """The idle wait's settings (see ``Sampler.idle_wait``)."""

    gate_kib: int
    timeout_s: float
    first_sleep_s: float
    min_interval_s: float
    max_interval_s: float
    min_rate_kib_s: float
    max_rate_kib_s: float
    rate_kib_s: float = 0.0  # the caller's measured decline (KiB/s)
    # pyoomd/interval.py's (the daemon passes them in)
    rate_safety: float = RATE_SAFETY
    rate_step_s: float = RATE_STEP_S
    rate_window_s: float = RATE_WINDOW_S
    psi_fd: int | None = None  # polled for POLLPRI (a PSI trigger)
    wake_fd: int | None = None  # polled for POLLIN (signal.set_wakeup_fd's pipe)
    # systemd's watchdog while we wait: a connected datagram socket to
    # $NOTIFY_SOCKET; "WATCHDOG=1" is sent on it after a sample once
    # ``notify_every_s`` has passed since ``notify_last_s`` (time.monotonic).
    notify_fd: int | None = None
    notify_every_s: float = 0.0
    notify_last_s: float = 0.0


def _ping(fd: int) -> bool:
    """"WATCHDOG=1" on a connected notify socket; whether it left."""
    try:
        return os.write(fd, b"WATCHDOG=1") == 10
    except OSError:
        return False


def idle_sleep_s(avail_kib: int, p: IdleParams, peak_kib_s: float) -> float:
    """The sleep between idle samples: headroom to the gate over the assumed
    rate, clamped (the daemon's rule with the gate in place of TERM; in C
    pyoomd_idle_interval)."""
    return next_interval_s(avail_kib - p.gate_kib, peak_kib_s, p.min_rate_kib_s, p.max_rate_kib_s,
                           p.min_interval_s, p.max_interval_s, p.rate_safety)


def _load_extension() -> ModuleType | None:
    """The compiled reader, or None when it was not built."""
    try:
        return importlib.import_module("pyoomd.sense._reader")
    except ImportError:
        return None


def choose_backend(backend: str = "auto") -> str:
    """Resolve ``backend`` to "cffi" or "python" (see the module docstring)."""
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if backend not in BACKENDS:
        raise StartupError(f"unknown reader backend {backend!r} (expected one of {BACKENDS})", 78)  # EX_CONFIG
    if backend == "auto":
        return "cffi" if _load_extension() is not None else "python"
    if backend == "cffi" and _load_extension() is None:
        raise StartupError(
            "reader backend 'cffi' requested but pyoomd.sense._reader is not built "
            f"(reinstall with `pip install .`, or set {ENV_VAR}=python)",
            EXIT_NO_EXTENSION,
        )
    return backend


def pread_all(fd: int) -> bytes:
    """The whole file from offset 0; a short read is the end (procfs)."""
    data = os.pread(fd, READ_CHUNK, 0)
    if len(data) < READ_CHUNK:
        return data
    chunks = [data]
    size = len(data)
    while True:
        chunk = os.pread(fd, READ_CHUNK, size)
        chunks.append(chunk)
        size += len(chunk)
        if len(chunk) < READ_CHUNK:
            return b"".join(chunks)
        if size >= READ_MAX:
            raise OSError(errno.EFBIG, "file larger than READ_MAX", str(fd))


class _PythonReader:
    """Kept-open descriptors, re-read with os.pread, parsed by parse.py."""

    def __init__(self, meminfo_path: str, psi_path: str) -> None:
        self.meminfo_path = meminfo_path
        self.psi_path = psi_path
        self._meminfo_fd = os.open(meminfo_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._psi_fd: int | None = os.open(psi_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # no PSI: kernel < 4.20, CONFIG_PSI=n or psi=0
            self._psi_fd = None

    @property
    def has_psi(self) -> bool:
        return self._psi_fd is not None

    def read(self) -> MemSample:
        if self._meminfo_fd < 0:
            raise ValueError("read from a closed Sampler")
        sample = parse_meminfo(pread_all(self._meminfo_fd), self.meminfo_path)
        if self._psi_fd is None:
            return sample
        psi = parse_pressure(pread_all(self._psi_fd), self.psi_path)
        return MemSample(
            sample.mem_total_kib, sample.mem_available_kib, sample.swap_total_kib,
            sample.swap_free_kib, psi, sample.available_estimated,
        )

    def idle_wait(self, p: IdleParams) -> IdleResult:
        """_reader.c's pyoomd_idle_wait in Python (same rule and reasons).
        One difference: Python retries an interrupted poll() after running
        the signal handlers (PEP 475), so a signal ends the wait through
        ``wake_fd`` only."""
        if self._meminfo_fd < 0:
            raise ValueError("read from a closed Sampler")
        poller = select.poll()
        if p.psi_fd is not None:
            poller.register(p.psi_fd, select.POLLPRI)
        if p.wake_fd is not None:
            poller.register(p.wake_fd, select.POLLIN)
        clock = time.monotonic
        now = clock()
        deadline, sleep_s = now + p.timeout_s, p.first_sleep_s
        rate = PeakRate.seeded(p.rate_kib_s, now)
        prev: tuple[float, int] | None = None  # the last sample before this one
        samples, revents, reason = 0, 0, ""
        pings, ping_at = 0, p.notify_last_s
        while True:
            for fd, ev in poller.poll(max(0, math.ceil(min(sleep_s, deadline - clock()) * 1000))):
                if fd == p.wake_fd:
                    reason = "wake"
                elif not reason:
                    reason, revents = "psi", ev
            if reason:
                break
            now = clock()
            sample = parse_meminfo(pread_all(self._meminfo_fd), self.meminfo_path)
            samples += 1
            if p.notify_fd is not None and now - ping_at >= p.notify_every_s and _ping(p.notify_fd):
                pings, ping_at = pings + 1, now
            avail = sample.mem_available_kib
            if avail <= p.gate_kib:
                reason = "gate"
                break
            peak = rate.add(now, avail, p.rate_step_s, p.rate_window_s)
            if now >= deadline - 1e-4:
                reason = "deadline"
                break
            prev = (now, avail)
            sleep_s = idle_sleep_s(avail, p, peak)
        if reason in ("gate", "deadline"):
            out = self._with_psi(sample)
        else:  # woken: a fresh whole sample; the last one read here comes before it
            now = clock()
            out = self.read()
            samples += 1
        if prev is None:
            return IdleResult(out, reason, revents, samples, None, 0, pings, ping_at)
        return IdleResult(out, reason, revents, samples, now - prev[0], prev[1], pings, ping_at)

    def _with_psi(self, sample: MemSample) -> MemSample:
        if self._psi_fd is None:
            return sample
        psi = parse_pressure(pread_all(self._psi_fd), self.psi_path)
        return MemSample(sample.mem_total_kib, sample.mem_available_kib, sample.swap_total_kib,
                         sample.swap_free_kib, psi, sample.available_estimated)

    def close(self) -> None:
        for fd in (self._meminfo_fd, self._psi_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self._meminfo_fd, self._psi_fd = -1, None


class _CffiReader:
    """The C reader; on a malformed file, parse.py names what is wrong."""

    def __init__(self, meminfo_path: str, psi_path: str) -> None:
        ext = _load_extension()
        assert ext is not None  # choose_backend checked it
        self._ffi: Any = ext.ffi
        self._lib: Any = ext.lib
        self.meminfo_path = meminfo_path
        self.psi_path = psi_path
        if _SAMPLE_SIZE != self._ffi.sizeof("struct pyoomd_sample"):
            raise StartupError("pyoomd.sense._reader does not match sample.py: rebuild it", EXIT_NO_EXTENSION)
        err = self._ffi.new("int *")
        handle = self._lib.pyoomd_open(os.fsencode(meminfo_path), os.fsencode(psi_path), err)
        if handle == self._ffi.NULL:
            raise OSError(-err[0], os.strerror(-err[0]), meminfo_path)
        self._handle: Any = handle
        # The struct lives in a bytearray: struct.unpack_from reads a bytearray
        # faster than a cffi buffer (~0.1 us against ~0.17 us).
        self._out_buf = bytearray(_SAMPLE_SIZE)
        self._out: Any = self._ffi.from_buffer("struct pyoomd_sample *", self._out_buf)
        self._idle: Any = self._ffi.new("struct pyoomd_idle *")
        self.has_psi = bool(self._lib.pyoomd_has_psi(handle))
        self._psi: Pressure | None = None
        self.read = self._make_read()  # type: ignore[method-assign]

    def _make_read(self) -> Callable[[], MemSample]:
        """The hot path as a closure: everything it touches is a local."""
        call, out, buf = self._lib.pyoomd_read, self._out, self._out_buf
        head, new = _HEAD_STRUCT.unpack_from, _tuple_new

        def read() -> MemSample:
            handle = self._handle
            if handle is None:
                raise ValueError("read from a closed Sampler")
            rc = call(handle, out)
            if rc:
                self._failed(rc)
            total, avail, swap_total, swap_free, _, _, _, _, has_avail, has_psi, has_full, same = head(buf)
            if has_psi:
                psi = self._psi if same and self._psi is not None else self._pressure(has_full)
            else:
                psi = None
            return new(MemSample, (total, avail, swap_total, swap_free, psi, not has_avail))  # make_memsample
        return read

    def read(self) -> MemSample:  # replaced per instance by _make_read's closure
        raise NotImplementedError

    def _failed(self, rc: int) -> None:
        self._psi = None  # the C side forgot its last PSI read too
        if rc == -errno.EINVAL:
            self._raise_parse_error()
        raise OSError(-rc, os.strerror(-rc), self.meminfo_path)

    def _sample(self) -> MemSample:
        """The MemSample in self._out."""
        total, avail, swap_total, swap_free, _, _, _, _, has_avail, has_psi, has_full, same = (
            _HEAD_STRUCT.unpack_from(self._out_buf))
        if has_psi:
            psi = self._psi if same and self._psi is not None else self._pressure(has_full)
        else:
            psi = None
        return make_memsample(total, avail, swap_total, swap_free, psi, not has_avail)

    def idle_wait(self, p: IdleParams) -> IdleResult:
        """Sample in C (GIL released) until there is something to judge: see
        pyoomd_idle_wait in _reader.c."""
        if self._handle is None:
            raise ValueError("read from a closed Sampler")
        w = self._idle
        w.gate_kib, w.first_sleep_s, w.timeout_s = p.gate_kib, p.first_sleep_s, p.timeout_s
        w.min_interval_s, w.max_interval_s = p.min_interval_s, p.max_interval_s
        w.min_rate_kib_s, w.max_rate_kib_s, w.rate_kib_s = p.min_rate_kib_s, p.max_rate_kib_s, p.rate_kib_s
        w.rate_safety, w.rate_step_s, w.rate_window_s = p.rate_safety, p.rate_step_s, p.rate_window_s
        w.psi_fd = -1 if p.psi_fd is None else p.psi_fd
        w.wake_fd = -1 if p.wake_fd is None else p.wake_fd
        w.notify_fd = -1 if p.notify_fd is None else p.notify_fd
        w.notify_every_s, w.notify_last_s = p.notify_every_s, p.notify_last_s
        rc = self._lib.pyoomd_idle_wait(self._handle, w, self._out)
        if rc:
            self._failed(rc)
        sample = self._sample()
        prev_age = None if w.prev_age_s < 0 else w.prev_age_s
        return IdleResult(sample, IDLE_REASONS[w.reason], w.revents, w.samples, prev_age,
                          w.prev_available_kib if prev_age is not None else 0, w.pings, w.notify_last_s)

    def _pressure(self, has_full: int) -> Pressure:
        """PSI from the struct.  The C reader says when the file read the
        same bytes as last time (psi_same: nothing stalled, the usual case);
        then the last Pressure is reused (it is immutable) and this is not
        called."""
        s10, s60, s300, f10, f60, f300, some_total, full_total = _PSI_STRUCT.unpack_from(
            self._out_buf, _HEAD_STRUCT.size)
        full = PsiLine(f10, f60, f300, full_total) if has_full else None
        self._psi = Pressure(PsiLine(s10, s60, s300, some_total), full)
        return self._psi

    def _raise_parse_error(self) -> None:
        """Re-read with the Python parsers for an error naming the field and
        the raw value.  If they accept what C rejected (the file changed in
        between), still raise: this reading is lost either way."""
        with open(self.meminfo_path, "rb") as f:
            parse_meminfo(f.read(READ_MAX), self.meminfo_path)
        if self.has_psi:
            with open(self.psi_path, "rb") as f:
                parse_pressure(f.read(READ_MAX), self.psi_path)
        raise ParseError(self.meminfo_path, "reader", -errno.EINVAL, "C reader rejected the file")

    def close(self) -> None:
        if self._handle is not None:
            self._lib.pyoomd_close(self._handle)
            self._handle = None


class Sampler:
    """Reads memory state from a Procfs; keeps the files open between reads."""

    def __init__(self, procfs: Procfs, backend: str = "auto") -> None:
        self.backend: str = choose_backend(backend)
        reader_cls = _CffiReader if self.backend == "cffi" else _PythonReader
        self._reader: _CffiReader | _PythonReader = reader_cls(procfs.meminfo, procfs.pressure_memory)
        self.has_psi: bool = self._reader.has_psi
        # The hot path: skip one Python call level (~0.1 us a read).
        self.read = self._reader.read  # type: ignore[method-assign]

    def read(self) -> MemSample:
        """One sample; raises ParseError on a malformed file, OSError on I/O."""
        return self._reader.read()

    def idle_wait(self, params: IdleParams) -> IdleResult:
        """Sample while MemAvailable stays above ``params.gate_kib``, sleeping
        between samples by the daemon's rule (headroom to the gate over the
        assumed fill rate, clamped to the sampling intervals), and return a
        whole sample as soon as there is something to judge: MemAvailable at
        or below the gate, ``timeout_s`` passed, the PSI fd fired, the wake
        fd became readable or (C reader) a signal interrupted the sleep.
        Raises as ``read`` does."""
        return self._reader.idle_wait(params)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
