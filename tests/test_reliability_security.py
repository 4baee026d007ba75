"""Security (issue 7): as root, pyoomd refuses config, policy and hook files
another user could have written, and its status socket answers root only.

Name spoofing is in tests/test_policy.py (test_name_only_protection_is_refused)
and integration/test_policy.py (test_spoofed_sshd_does_not_get_sshds_protection);
another user's process killed in place of a root one is in
integration/test_security.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyoomd import errors
from pyoomd.act.hooks import HookRunner, RunAs, check_programs
from pyoomd.cli import dispatch
from pyoomd.errors import ConfigError
from pyoomd.policy.load import load_policies
from pyoomd.report.control import StatusObserver, StatusServer, query
from pyoomd.settings.load import load_config, validate
from pyoomd.settings.schema import HooksConfig

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks apply when pyoomd runs as root")


def owned(path: Path, text: str, uid: int = 0, mode: int = 0o644) -> Path:
    path.write_text(text)
    os.chown(path, uid, -1) if os.geteuid() == 0 else None
    path.chmod(mode)
    return path


# -- config, policies ------------------------------------------------------------------
@root_only
@pytest.mark.parametrize("uid, mode, needle", [(NOBODY, 0o644, "owned by uid 65534"),
                                               (0, 0o664, "writable by group or others"),
                                               (0, 0o646, "writable by group or others")])
def test_root_refuses_a_config_another_user_could_write(tmp_path: Path, uid: int, mode: int, needle: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = owned(tmp_path / "config.yaml", "dry_run: true\n", uid, mode)
    with pytest.raises(ConfigError, match=needle):
        load_config(str(cfg))
    assert dispatch.main(["rank", "--config", str(cfg)]) == errors.EXIT_CONFIG
    assert needle in capsys.readouterr().err


@root_only
def test_root_refuses_a_policy_file_or_directory_of_another_user(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    text = "version: 1\nrules: [{name: r, match: {user: root}, adjust: -500}]\n"
    f = owned(tmp_path / "p.yaml", text, NOBODY)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        load_policies([str(f)], hostname="h")
    assert dispatch.main(["rank", "--config", os.devnull, "--policy", str(f)]) == errors.EXIT_CONFIG
    d = tmp_path / "policies.d"
    d.mkdir(mode=0o777)
    d.chmod(0o777)  # anyone could drop a file in
    owned(d / "ok.yaml", text)
    with pytest.raises(ConfigError, match="refused directory"):
        load_policies([str(d)], hostname="h")
    capsys.readouterr()


# -- hooks -------------------------------------------------------------------------------
@pytest.fixture
def hook_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hooks"
    d.mkdir()
    d.chmod(0o755)
    return d


def hooks(path: Path) -> HooksConfig:
    return validate(HooksConfig, {"pre_kill": [str(path)]})


@root_only
def test_root_refuses_a_hook_owned_by_another_user(hook_dir: Path) -> None:
    h = owned(hook_dir / "hook", "#!/bin/sh\n", NOBODY, 0o755)
    with pytest.raises(ConfigError, match="hook program refused: owned by uid 65534"):
        check_programs(hooks(h), euid=0)
    with pytest.raises(ConfigError):
        HookRunner(hooks(h), lambda *a, **k: None, RunAs())
    check_programs(hooks(h), euid=1000)  # a non-root daemon runs its own user's hooks


@root_only
def test_root_refuses_a_writable_hook_or_one_in_a_writable_directory(hook_dir: Path, tmp_path: Path) -> None:
    h = owned(hook_dir / "hook", "#!/bin/sh\n", 0, 0o757)
    with pytest.raises(ConfigError, match="writable by group or others"):
        check_programs(hooks(h), euid=0)
    h.chmod(0o755)
    check_programs(hooks(h), euid=0)
    hook_dir.chmod(0o777)  # anyone could replace the file
    with pytest.raises(ConfigError, match="writable by group or others"):
        check_programs(hooks(h), euid=0)
    hook_dir.chmod(0o1777)  # sticky (like /tmp): only root may replace root's file
    check_programs(hooks(h), euid=0)


@root_only
def test_run_with_a_refused_hook_exits_78_before_the_loop(hook_dir: Path, tmp_path: Path) -> None:
    h = owned(hook_dir / "hook", "#!/bin/sh\n", NOBODY, 0o755)
    cfg = owned(tmp_path / "config.yaml", f"hooks: {{pre_kill: [{h}]}}\n")
    # --dry-run: should the check ever fail, nothing is signalled; the
    # timeout bounds it and it is ended by its own pid.
    p = subprocess.Popen([sys.executable, "-m", "pyoomd", "run", "--dry-run", "--log-format", "json",
                          "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail("pyoomd run started with a hook owned by another user")
    assert p.returncode == errors.EXIT_CONFIG, err
    assert b"hook program refused" in err


# -- the status socket --------------------------------------------------------------------
@pytest.fixture
def server() -> Iterator[StatusServer]:
    # Below a 0755 directory (pytest's tmp_path is 0700): only the socket's
    # own directory and mode may stop another user.
    top = tempfile.mkdtemp(prefix="pyoomd-test-status-")
    os.chmod(top, 0o755)
    srv = StatusServer(os.path.join(top, "run", "status.sock"), StatusObserver(lambda: {"dry_run": True})).start()
    yield srv
    srv.stop()
    shutil.rmtree(top, ignore_errors=True)


def _as_nobody_connect(path: str) -> bytes:
    """Connect as uid nobody (a forked child); what the server sent, or b"EACCES"."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                try:
                    s.connect(path)
                except PermissionError:
                    os.write(w, b"EACCES")
                    os._exit(0)
                data = s.recv(65536)
                os.write(w, data)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


@root_only
def test_status_socket_refuses_other_users_by_mode(server: StatusServer) -> None:
    assert _as_nobody_connect(server.path) == b"EACCES"
    assert query(server.path)["dry_run"] is True  # root is answered


@root_only
def test_status_socket_refuses_other_users_by_peer_check_even_if_loosened(server: StatusServer) -> None:
    os.chmod(os.path.dirname(server.path), 0o755)
    os.chmod(server.path, 0o666)  # an admin loosened it: SO_PEERCRED still says no
    assert _as_nobody_connect(server.path) == b""
    assert query(server.path)["dry_run"] is True
