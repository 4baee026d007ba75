"""CLI flags fuzzed: a clear error and a documented exit code, never a traceback."""

from __future__ import annotations

import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from pyoomd import errors
from pyoomd.cli import dispatch, options

DOCUMENTED = {errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE, errors.EXIT_UNAVAILABLE, errors.EXIT_OSFILE,
              errors.EXIT_CONFIG}
FLAGS = ["-m", "-s", "-M", "-S", "--grace", "--top", "--config", "--policy", "--reader", "--log-format", "--json",
         "--dry-run", "--procfs", "--nonsense", "-x", ""]
VALUES = st.one_of(
    st.sampled_from(["10", "10,5", "200", "-1", "5%", "2G", "1,2,3", ",", "nan", "inf", "1e400", "",
                     "/nonexistent", "\x00", "ü", "0x10", "10,", ",10", "auto", "cffi", "json"]),
    st.text(max_size=12),
)


@pytest.fixture(autouse=True)
def _no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fuzzing must never start the real loop: `run` ends right after parsing."""
    from pyoomd.cli import commands

    monkeypatch.setattr(commands, "cmd_run", lambda args: options.settings_for(args) and errors.EXIT_OK)
    monkeypatch.setattr(options, "DEFAULT_CONFIG_PATH", "/nonexistent/pyoomd.yaml")


# capsys is read (and so emptied) on every example, so sharing it is safe.
def _exit_code(argv: list[str]) -> int:
    try:
        return dispatch.main(argv)
    except SystemExit as e:  # argparse's own exits (usage, --version)
        return int(e.code or 0)


@fuzz(300, 2000, fixture=True)
@given(cmd=st.sampled_from(["run", "rank", "sample", "bogus"]),
       args=st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), max_size=4))
def test_fuzzed_flags_give_documented_exit_codes(cmd: str, args: list[tuple[str, str]],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    argv = [cmd] + [x for pair in args for x in pair if x != ""]
    if cmd in ("rank", "sample"):
        argv += ["--procfs", "tests/fixtures/proc"]
    code = _exit_code(argv)
    err = capsys.readouterr().err
    assert code in DOCUMENTED, (argv, code, err)
    assert "Traceback" not in err
    if code in (errors.EXIT_USAGE, errors.EXIT_CONFIG):
        assert "pyoomd" in err and "error" in err
