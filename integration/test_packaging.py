"""The Debian package: built for real by packaging/build-deb.sh (pip reaches
PyPI for the bundled dependencies), then inspected with dpkg-deb and, where
installed, lintian.  Nothing is installed on this machine: the bundle is
extracted to a temporary directory and run from there with a python of the
version the package depends on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "packaging" / "build-deb.sh"
FIXTURE_PROC = ROOT / "tests" / "fixtures" / "proc"
BUILD_TIMEOUT_S = 600


def project(key: str) -> str:
    """A [project] string from pyproject.toml (no tomllib before 3.11)."""
    m = re.search(rf'^{key}\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert m, key
    return m.group(1)


def dependencies() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.MULTILINE | re.DOTALL)
    assert block
    return re.findall(r'"([^"]+)"', block.group(1))

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed (not Debian?)")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run(["bash", str(BUILD), str(out)], capture_output=True, text=True,
                       timeout=BUILD_TIMEOUT_S, check=False)
    assert r.returncode == 0, f"build-deb.sh failed ({r.returncode}):\n{r.stderr[-4000:]}"
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == out
    return path


@pytest.fixture(scope="module")
def fields(deb: Path) -> dict[str, str]:
    text = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    out: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith(" ") and key:
            out[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


@pytest.fixture(scope="module")
def contents(deb: Path) -> dict[str, tuple[str, str]]:
    """path -> (mode, owner) from dpkg-deb -c."""
    text = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    out = {}
    for line in text.splitlines():
        mode, owner, _size, _date, _time, path = line.split(None, 5)
        out[path.split(" -> ")[0]] = (mode, owner)
    return out


@pytest.fixture(scope="module")
def extracted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-R", str(deb), str(root)], check=True, timeout=120)
    return root


def test_control_fields(fields: dict[str, str]) -> None:
    version = project("version")
    assert fields["Package"] == "pyoomd"
    assert fields["Version"] == version
    assert re.search(r"\bpython3 \(>= 3\.(\d+)\)", fields["Depends"])
    minor = int(re.search(r"python3 \(>= 3\.(\d+)\)", fields["Depends"]).group(1))  # type: ignore[union-attr]
    assert minor >= 10
    assert f"python3 (<< 3.{minor + 1})" in fields["Depends"]  # compiled extensions: one ABI
    assert "libc6" in fields["Depends"]
    for field in ("Conflicts", "Replaces"):
        assert {"earlyoom", "nohang"} <= {p.strip() for p in fields[field].split(",")}, field
    assert fields["Section"] == "admin"


def test_contents(contents: dict[str, tuple[str, str]]) -> None:
    must = {
        "./usr/bin/pyoomd": "-rwxr-xr-x",
        "./lib/systemd/system/pyoomd.service": "-rw-r--r--",
        "./etc/pyoomd/config.yaml": "-rw-r--r--",
        "./etc/pyoomd/policies.d/": "drwxr-xr-x",
        "./usr/lib/pyoomd/pyoomd/__init__.py": "-rw-r--r--",
        "./usr/lib/pyoomd/pyoomd/daemon/core.py": "-rw-r--r--",
        "./usr/lib/pyoomd/pyoomd/report/sdnotify.py": "-rw-r--r--",
        "./usr/share/doc/pyoomd/copyright": "-rw-r--r--",
        "./usr/share/man/man1/pyoomd.1.gz": "-rw-r--r--",
    }
    for path, mode in must.items():
        assert path in contents, path
        assert contents[path][0] == mode, (path, contents[path])
    if (ROOT / "policies" / "default.yaml").exists():
        assert "./etc/pyoomd/policies.d/default.yaml" in contents
    for p in (ROOT / "policies").glob("*.yaml"):
        assert f"./usr/share/doc/pyoomd/examples/policies/{p.name}" in contents
    # the cffi reader was compiled, and every dependency came along
    assert any(re.fullmatch(r"\./usr/lib/pyoomd/pyoomd/sense/_reader\..*so", p) for p in contents)
    for dep in dependencies():
        name = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower().replace("-", "_")
        assert any(re.match(rf"\./usr/lib/pyoomd/{name}-[^/]+\.dist-info/$", p, re.IGNORECASE) for p in contents), dep
    assert all(owner == "root/root" for _, owner in contents.values())
    assert not [p for p in contents if "__pycache__" in p or p.startswith("./usr/lib/pyoomd/bin/")]


def test_unit_config_and_policy_are_the_sources(extracted: Path) -> None:
    assert (extracted / "lib/systemd/system/pyoomd.service").read_bytes() == \
        (ROOT / "packaging/systemd/pyoomd.service").read_bytes()
    assert (extracted / "etc/pyoomd/config.yaml").read_bytes() == (ROOT / "packaging/config.yaml").read_bytes()
    default = ROOT / "policies" / "default.yaml"
    if default.exists():
        assert (extracted / "etc/pyoomd/policies.d/default.yaml").read_bytes() == default.read_bytes()


def test_conffiles_and_maintainer_scripts(extracted: Path) -> None:
    ctrl = extracted / "DEBIAN"
    conffiles = (ctrl / "conffiles").read_text().split()
    assert "/etc/pyoomd/config.yaml" in conffiles
    assert all(c.startswith("/etc/") and (extracted / c.lstrip("/")).is_file() for c in conffiles)
    for script in ("postinst", "prerm", "postrm"):
        path = ctrl / script
        assert path.stat().st_mode & 0o777 == 0o755, script
        subprocess.run(["sh", "-n", str(path)], check=True)  # parses
    postinst = (ctrl / "postinst").read_text()
    assert "deb-systemd-helper enable 'pyoomd.service'" in postinst
    # systemctl and starting only where systemd runs: enable works offline too
    guarded = postinst.split("if [ -d /run/systemd/system ]; then", 1)
    assert len(guarded) == 2 and "systemctl" not in guarded[0] and "deb-systemd-invoke" not in guarded[0]
    assert "daemon-reload" in guarded[1]
    md5 = (ctrl / "md5sums").read_text()
    assert " usr/bin/pyoomd\n" in md5 and " etc/pyoomd/config.yaml" not in md5  # conffiles are not listed


def _python_for(fields: dict[str, str]) -> str | None:
    minor = re.search(r"python3 \(>= (3\.\d+)\)", fields["Depends"]).group(1)  # type: ignore[union-attr]
    for py in ("/usr/bin/python3", sys.executable):
        r = subprocess.run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, check=False)
        if r.returncode == 0 and r.stdout.strip() == minor:
            return py
    return None


def test_the_bundle_runs(extracted: Path, fields: dict[str, str]) -> None:
    """/usr/bin/pyoomd's own code, pointed at the extracted bundle, with a
    python of the version the package depends on, in isolated mode (nothing
    from this checkout or the test venv can be imported)."""
    py = _python_for(fields)
    if py is None:
        pytest.skip(f"no python here matches the package's Depends: {fields['Depends']}")
    wrapper = (extracted / "usr/bin/pyoomd").read_text()
    assert wrapper.startswith("#!/usr/bin/python3 -I\n")
    code = wrapper.replace('"/usr/lib/pyoomd"', repr(str(extracted / "usr/lib/pyoomd")))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([py, "-I", "-c", code, *args], capture_output=True, text=True, timeout=60,
                              cwd="/", check=False)

    r = run("--procfs", str(FIXTURE_PROC), "sample", "--json")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["backend"] == "cffi"  # the compiled reader, not the fallback
    r = run("--procfs", str(FIXTURE_PROC), "rank", "--top", "1", "--config",
            str(extracted / "etc/pyoomd/config.yaml"))
    assert r.returncode == 0, r.stderr
    r = run("--version")
    assert r.returncode == 0 and fields["Version"] in r.stdout


def test_lintian(deb: Path) -> None:
    lintian = shutil.which("lintian")
    if lintian is None:
        pytest.skip("lintian not installed (.ci/run installs it)")
    r = subprocess.run([lintian, "--tag-display-limit", "0", str(deb)], capture_output=True, text=True,
                       timeout=300, check=False)
    tags = [line for line in r.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    errors = [t for t in tags if t.startswith("E: ")]
    warnings = [t for t in tags if t.startswith("W: ")]
    print(f"lintian: {len(errors)} errors, {len(warnings)} warnings", *tags, sep="\n")
    assert not errors, "\n".join(errors)
    assert r.returncode == 0, r.stdout + r.stderr
