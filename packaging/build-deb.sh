#!/usr/bin/env bash
# Build pyoomd_<version>_<arch>.deb with dpkg-deb.
#
#   packaging/build-deb.sh [OUTDIR]        (default OUTDIR: dist/)
#
# The package bundles pyoomd and its Python dependencies in /usr/lib/pyoomd
# (pip install --target, from PyPI or a local wheel cache), and runs them with
# Debian's /usr/bin/python3.  Compiled extensions (pyoomd's cffi reader,
# pydantic-core, psutil, PyYAML) are built for one Python minor version, so
# the build interpreter must have the target system's python3 minor version;
# Depends pins that version range.  $PYTHON chooses it; by default Debian's
# own /usr/bin/python3 (with pip and python3-dev), else python3 on PATH.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/.." && pwd)"
outdir="$(mkdir -p "${1:-$src/dist}" && cd "${1:-$src/dist}" && pwd)"
if [ -z "${PYTHON:-}" ] && /usr/bin/python3 -m pip --version >/dev/null 2>&1 \
        && [ -f "$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
    PYTHON=/usr/bin/python3
fi
python="${PYTHON:-python3}"
maintainer="${DEB_MAINTAINER:-pyoomd developers <pyoomd@example.org>}"

for tool in dpkg-deb gzip objdump; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool is required" >&2; exit 69; }
done

version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$src/pyproject.toml" | head -1)"
pyminor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
pynext="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')"
arch="$(dpkg --print-architecture)"

work="$(mktemp -d "${TMPDIR:-/tmp}/pyoomd-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
lib="$root/usr/lib/pyoomd"
doc="$root/usr/share/doc/pyoomd"
mkdir -p "$lib" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/pyoomd/policies.d" \
         "$doc/examples/policies" "$root/DEBIAN"

echo "build-deb: pyoomd $version for python $pyminor ($arch)" >&2

# 1. The code and its dependencies.  The source is copied first so the build
#    leaves no build/ or egg-info behind in the tree.
rsync_src="$work/src"
mkdir -p "$rsync_src"
(cd "$src" && git ls-files -z --cached --others --exclude-standard 2>/dev/null \
    | grep -zv '^packaging/' | xargs -0 cp --parents -t "$rsync_src" 2>/dev/null) \
    || cp -a "$src/pyproject.toml" "$src/setup.py" "$src/README.md" "$src/pyoomd" "$rsync_src/"
"$python" -m pip install --quiet --disable-pip-version-check --no-compile --no-warn-script-location \
    --root-user-action=ignore --ignore-installed --target "$lib" "$rsync_src"
rm -rf "$lib/bin"                                   # console scripts: /usr/bin/pyoomd is ours
# PyYAML's wheel links a private copy of libyaml: drop the C accelerator, the
# pure-Python loader (the one pyoomd uses: SafeLoader) needs no library.
rm -rf "$lib"/yaml/_yaml.*.so "$lib/_yaml"
# An interpreter built with an rpath (pyenv) leaks it into our extension.
for so in $(find "$lib" -name '*.so'); do
    if objdump -p "$so" 2>/dev/null | grep -qE '^\s*(RUNPATH|RPATH)'; then
        if command -v chrpath >/dev/null; then chrpath -d "$so" >/dev/null
        elif command -v patchelf >/dev/null; then patchelf --remove-rpath "$so"
        else echo "build-deb: warning: $so has an RPATH (build with Debian's python3)" >&2; fi
    fi
done
find "$lib" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$lib" -name '*.so' -exec strip --strip-unneeded {} + 2>/dev/null || true
# A #! line in an imported module is dead text (lintian: unusual-interpreter):
# blank it, keeping line numbers for tracebacks.
find "$lib" -name '*.py' -type f -exec grep -l -m1 '^#!' {} + 2>/dev/null \
    | xargs -r sed -i '1s/^#!.*$/#/'
find "$lib" -type d -exec chmod 755 {} +
find "$lib" -type f -exec chmod 644 {} +

# 2. The command, the unit, the configuration and the policies.
install -m 755 "$here/debian/pyoomd.wrapper" "$root/usr/bin/pyoomd"
install -m 644 "$here/systemd/pyoomd.service" "$root/lib/systemd/system/pyoomd.service"
install -m 644 "$here/config.yaml" "$root/etc/pyoomd/config.yaml"
# lets root own org.freedesktop.LowMemoryMonitor on the system bus (low_memory_monitor)
install -Dm 644 "$here/dbus/pyoomd-lowmemory.conf" "$root/usr/share/dbus-1/system.d/pyoomd-lowmemory.conf"
conffiles="/etc/pyoomd/config.yaml"
# default.yaml is active; every policy (default, desktop, server, ...) is
# also kept as an example to copy into policies.d.
if [ -f "$src/policies/default.yaml" ]; then
    install -m 644 "$src/policies/default.yaml" "$root/etc/pyoomd/policies.d/default.yaml"
    conffiles="$conffiles
/etc/pyoomd/policies.d/default.yaml"
fi
for p in "$src"/policies/*.yaml; do
    [ -e "$p" ] && install -m 644 "$p" "$doc/examples/policies/"
done

# 3. Documentation.
install -m 644 "$src/README.md" "$doc/README.md"
mkdir -p "$root/usr/share/man/man1"
gzip -9n < "$here/debian/pyoomd.1" > "$root/usr/share/man/man1/pyoomd.1.gz"
chmod 644 "$root/usr/share/man/man1/pyoomd.1.gz"
install -m 644 "$here/debian/copyright" "$doc/copyright"
date_r="$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git -C "$src" log -1 --format=%ct 2>/dev/null || date +%s)}")"
sed -e "s/@VERSION@/$version/" -e "s/@DATE@/$date_r/" "$here/debian/changelog" \
    -e "s/@MAINTAINER@/$maintainer/" | gzip -9n > "$doc/changelog.gz"   # a native package
chmod 644 "$doc/changelog.gz"

# 4. Control files.  libc: the newest GLIBC_x.y symbol version any bundled
#    extension needs.
glibc="$(find "$lib" -name '*.so' -exec objdump -T {} + 2>/dev/null \
    | grep -oE 'GLIBC_[0-9]+\.[0-9]+' | sed 's/GLIBC_//' | sort -uV | tail -1)"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@PYDEPENDS@/python3 (>= $pyminor), python3 (<< $pynext), libc6 (>= ${glibc:-2.17})/" \
    -e "s/@MAINTAINER@/$maintainer/" \
    "$here/debian/control.in" > "$root/DEBIAN/control"
printf '%s\n' "$conffiles" > "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
    install -m 755 "$here/debian/$s" "$root/DEBIAN/$s"
done
# md5sums: every file but the conffiles (all of /etc), as dh_md5sums does.
(cd "$root" && find . \( -path ./DEBIAN -o -path ./etc \) -prune -o -type f -print0 | sort -z \
    | xargs -0 md5sum | sed 's| \./| |') > "$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

deb="$outdir/pyoomd_${version}_${arch}.deb"
dpkg-deb --build -Zxz --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
