"""Both Sampler backends on the same files: identical MemSample or both
ParseError; backend selection; re-reading a file that changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import EXT, FIXTURES, fake_proc, needs_cffi

from pyoomd.errors import ParseError, StartupError
from pyoomd.model import MemSample
from pyoomd.sense import sample as sample_mod
from pyoomd.sense.parse import parse_pressure
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.sample import ENV_VAR, Sampler, choose_backend

MEMINFO = sorted((FIXTURES / "meminfo").glob("*.txt"))
PRESSURE = sorted((FIXTURES / "pressure").glob("*.txt"))
HAVE_CFFI = EXT is not None
BACKENDS = ["python", pytest.param("cffi", marks=needs_cffi)]


def read_with(procfs: Procfs, backend: str) -> object:
    with Sampler(procfs, backend) as sampler:
        assert sampler.backend == backend
        try:
            return sampler.read()
        except ParseError as e:
            return ("ParseError", e.path)




@needs_cffi
@pytest.mark.parametrize("meminfo", MEMINFO, ids=lambda p: p.name)
@pytest.mark.parametrize("psi", [None, *PRESSURE], ids=lambda p: p.name if p else "no-psi")
def test_backends_agree(tmp_path: Path, meminfo: Path, psi: Path | None) -> None:
    procfs = fake_proc(tmp_path, meminfo.read_bytes(), psi.read_bytes() if psi else None)
    python, cffi = read_with(procfs, "python"), read_with(procfs, "cffi")
    assert python == cffi
    bad = meminfo.name.startswith("bad_") or (psi is not None and psi.name.startswith("bad_"))
    assert (not isinstance(python, MemSample)) == bad  # a bad file: ("ParseError", path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_matches_parsers(backend: str) -> None:
    procfs = Procfs(str(FIXTURES / "proc"))
    with Sampler(procfs, backend) as sampler:
        got = sampler.read()
        assert sampler.has_psi
    expected_psi = parse_pressure((FIXTURES / "proc/pressure/memory").read_bytes())
    assert got.psi == expected_psi and got.psi is not None and got.psi.full is not None
    assert got == MemSample(16318708, 6822140, 8388604, 7340028, expected_psi, False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_psi_file(tmp_path: Path, backend: str) -> None:
    procfs = fake_proc(tmp_path, (FIXTURES / "meminfo/modern_6x.txt").read_bytes(), None)
    with Sampler(procfs, backend) as sampler:
        assert not sampler.has_psi
        assert sampler.read().psi is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_meminfo_is_oserror(tmp_path: Path, backend: str) -> None:
    with pytest.raises(FileNotFoundError):
        Sampler(Procfs(str(tmp_path)), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rereads_changed_file(tmp_path: Path, backend: str) -> None:
    some = b"some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"
    procfs = fake_proc(tmp_path, b"MemTotal: 1000 kB\nMemAvailable: 900 kB\n", some)
    meminfo, psi = tmp_path / "meminfo", tmp_path / "pressure" / "memory"
    with Sampler(procfs, backend) as sampler:
        first = sampler.read()
        # Rewrite in place (same inode: the kept-open fd must see it), shorter file.
        with open(meminfo, "r+b") as f:
            f.write(b"MemTotal: 1000 kB\nMemAvailable: 5 kB\n")
            f.truncate()
        with open(psi, "r+b") as f:
            f.write(b"some avg10=99.50 avg60=0.00 avg300=0.00 total=7\n")
            f.write(b"full avg10=1.00 avg60=0.00 avg300=0.00 total=2\n")
        second = sampler.read()
        with open(meminfo, "r+b") as f:
            f.write(b"MemTotal: garbage\n")
            f.truncate()
        with pytest.raises(ParseError) as info:
            sampler.read()
        assert info.value.field == "MemTotal"
    assert first.mem_available_kib == 900 and second.mem_available_kib == 5
    assert first.psi is not None and first.psi.full is None
    assert second.psi is not None and second.psi.some.avg10 == 99.5 and second.psi.full is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_file_larger_than_buffer(tmp_path: Path, backend: str) -> None:
    filler = b"".join(b"Filler%05d: %d kB\n" % (i, i) for i in range(2000))  # ~40 KiB
    procfs = fake_proc(tmp_path, filler + b"MemTotal: 1000 kB\nMemAvailable: 321 kB\n", None)
    with Sampler(procfs, backend) as sampler:
        assert sampler.read().mem_available_kib == 321


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_after_close(tmp_path: Path, backend: str) -> None:
    sampler = Sampler(Procfs(str(FIXTURES / "proc")), backend)
    sampler.close()
    sampler.close()  # idempotent
    with pytest.raises(ValueError):
        sampler.read()


# -- backend selection -------------------------------------------------------------
def test_env_selects_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "python")
    assert choose_backend("auto") == "python"
    assert Sampler(Procfs(str(FIXTURES / "proc"))).backend == "python"
    if HAVE_CFFI:
        assert choose_backend("cffi") == "cffi"  # explicit argument wins over env
        monkeypatch.setenv(ENV_VAR, "cffi")
        assert choose_backend() == "cffi"


def test_auto_prefers_cffi_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert choose_backend() == ("cffi" if HAVE_CFFI else "python")
    monkeypatch.setenv(ENV_VAR, "auto")
    assert choose_backend() == ("cffi" if HAVE_CFFI else "python")


def test_missing_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample_mod, "_load_extension", lambda: None)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert choose_backend() == "python"
    with pytest.raises(StartupError) as info:
        choose_backend("cffi")
    assert info.value.exit_code == 69 and "pip install" in str(info.value)
    monkeypatch.setenv(ENV_VAR, "cffi")
    with pytest.raises(StartupError):
        choose_backend()


@pytest.mark.parametrize("bad", ["rust", "CFFI2"])
def test_unknown_backend(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    with pytest.raises(StartupError):
        choose_backend(bad)
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(StartupError):
        choose_backend()


# -- live, after the fixture tests ---------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="no /proc/meminfo on this system")
@pytest.mark.parametrize("backend", BACKENDS)
def test_live_proc(backend: str) -> None:
    with Sampler(Procfs(), backend) as sampler:
        got = sampler.read()
    assert 0 < got.mem_available_kib <= got.mem_total_kib
    assert (got.psi is not None) == sampler.has_psi
