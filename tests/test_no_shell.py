"""No shell anywhere: pyoomd runs hooks and helpers with argv lists only."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN = re.compile(r"shell\s*=\s*True|os\.system\s*\(|os\.popen\s*\(|commands\.getoutput|subprocess\.getoutput")


def _sources() -> list[pathlib.Path]:
    files = sorted((ROOT / "pyoomd").rglob("*.py"))
    files += sorted((ROOT / "packaging").rglob("*.py")) if (ROOT / "packaging").exists() else []
    return files


def test_no_shell_in_the_package() -> None:
    files = _sources()
    assert len(files) > 10  # the scan really looked at the package
    offenders = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
                 for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
                 if FORBIDDEN.search(line)]
    assert offenders == []


def test_the_pattern_catches_what_it_should() -> None:
    for bad in ("subprocess.run(x, shell=True)", "os.system('ls')", "os.popen('ls')", "shell = True"):
        assert FORBIDDEN.search(bad), bad
    assert not FORBIDDEN.search("subprocess.run(['ls'], check=True)")
