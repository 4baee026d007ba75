"""The README's first command, as written, with the system's own Python.

Debian 12 and Ubuntu 24.04 mark their Python "externally managed" (PEP 668):
a bare ``pip install .`` stops at once there.  This runs the README's install
command verbatim, in a fresh copy of the tree, with ``/usr/bin`` first on
PATH (so ``python3`` is the distribution's, not a pyenv or venv one), and
checks that the dry-run daemon it starts logs ``startup`` and sends nothing.
The daemon runs inside a private PID namespace even though it is a dry run,
and is stopped with SIGINT after its start-up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL_TIMEOUT_S = 600  # pip fetches pydantic, psutil, cffi, ... and builds the extension
STARTUP_TIMEOUT_S = 30

pytestmark = [
    pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"no {SYSTEM_PYTHON} (not a distribution Python)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the command may install python3-venv with apt-get (root)"),
]


def readme_commands() -> list[str]:
    """The sh blocks of the README's "Two commands" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.DOTALL)


def test_the_readme_has_exactly_two_set_up_commands() -> None:
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert cmds[0].rstrip().endswith("pyoomd run --dry-run"), cmds[0]
    assert cmds[1].rstrip().endswith("python3 -m pytest"), cmds[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci


def _copy_tree(dst: Path) -> None:
    """The tracked files only, as a fresh clone would have them."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def test_first_command_installs_and_runs_the_dry_run_daemon_on_the_system_python() -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    first = readme_commands()[0]
    with tempfile.TemporaryDirectory(prefix="pyoomd-readme-") as d:
        tree = Path(d) / "pyoomd"
        _copy_tree(tree)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        env["DEBIAN_FRONTEND"] = "noninteractive"
        # pip's output and the daemon's log (stderr) in one stream, read as it comes.
        argv = ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", first]
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        lines: list[str] = []
        try:
            deadline = time.monotonic() + INSTALL_TIMEOUT_S + STARTUP_TIMEOUT_S
            startup = None
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            buf = b""
            while time.monotonic() < deadline and proc.poll() is None:
                chunk = proc.stdout.read() or b""
                buf += chunk
                *done, buf = buf.split(b"\n")
                lines += [ln.decode(errors="replace") for ln in done]
                startup = next((ln for ln in lines if '"event": "startup"' in ln), None)
                if startup:
                    break
                time.sleep(0.2)
            assert startup, (proc.returncode, lines[-30:])
            event = json.loads(startup)
            assert event["dry_run"] is True
            python = os.path.realpath(tree / ".venv" / "bin" / "python3")
            assert python == os.path.realpath(SYSTEM_PYTHON), python
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        assert not any('"event": "kill"' in ln and '"dry_run": false' in ln for ln in lines)
