#!/usr/bin/env bash
# Build the container image localhost/pyoomd:VERSION, with no base image from
# a registry: a minimal Debian root file system made by debootstrap from
# Debian's own packages, and the project's .deb (packaging/build-deb.sh)
# installed into it with dpkg.  The image has the package's files, defaults
# (/etc/pyoomd/config.yaml, policies.d/default.yaml) and command; it starts
# `pyoomd run` directly (no systemd: the unit file is there, unused).
#
#   packaging/container/build.sh [--deb FILE] [--tag NAME:TAG]
#
# Needs root (debootstrap, chroot), debootstrap, podman, dpkg-deb, and
# Debian's package mirror (debootstrap's default, or $DEBIAN_MIRROR).
# $PYOOMD_ROOTFS_CACHE=DIR keeps the debootstrap root as a tarball in DIR
# and reuses it on the next build (CI: a directory removed at the end of the
# run).  The last line printed is the image's name; the line before it, its
# size.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../.." && pwd)"
suite="${DEBIAN_SUITE:-bookworm}"
version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$src/pyproject.toml" | head -1)"
tag="localhost/pyoomd:$version"
deb=""
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) deb="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build: unknown argument: $1" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "build: must run as root (debootstrap, chroot)" >&2; exit 77; }
for tool in debootstrap podman dpkg-deb unshare; do
    command -v "$tool" >/dev/null || { echo "build: $tool is required" >&2; exit 69; }
done
arch="$(dpkg --print-architecture)"

work="$(mktemp -d "${TMPDIR:-/var/tmp}/pyoomd-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
t0=$(date +%s)

# 1. The package.
if [ -z "$deb" ]; then
    deb="$(bash "$src/packaging/build-deb.sh" "$work/deb" | tail -1)"
fi
[ -f "$deb" ] || { echo "build: no .deb at $deb" >&2; exit 66; }
t1=$(date +%s)

# 2. The root file system: minbase (dpkg, apt, libc, coreutils, ...) plus
#    what the package depends on.
cache=""
if [ -n "${PYOOMD_ROOTFS_CACHE:-}" ]; then
    mkdir -p "$PYOOMD_ROOTFS_CACHE"
    cache="$PYOOMD_ROOTFS_CACHE/debootstrap-$suite-$arch-minbase.tar"
fi
mkdir -p "$root"
if [ -n "$cache" ] && [ -f "$cache" ]; then
    echo "build: debootstrap root from $cache" >&2
    tar -C "$root" --numeric-owner -xpf "$cache"
else
    echo "build: debootstrap --variant=minbase $suite ($arch)" >&2
    debootstrap --variant=minbase --arch="$arch" --include=python3,init-system-helpers \
        "$suite" "$root" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} > "$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; echo "build: debootstrap failed" >&2; exit 1; }
    if [ -n "$cache" ]; then
        tar -C "$root" --numeric-owner -cpf "$cache.part" . && mv "$cache.part" "$cache"
    fi
fi
t2=$(date +%s)

# 3. The package, installed with dpkg in the root (its own /proc, in a
#    private mount and PID namespace: nothing is mounted on the host).
cp "$deb" "$root/tmp/pyoomd.deb"
unshare --mount --pid --fork --mount-proc="$root/proc" \
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    dpkg -i /tmp/pyoomd.deb > "$work/dpkg.log" 2>&1 \
    || { cat "$work/dpkg.log" >&2; echo "build: dpkg -i failed in the root" >&2; exit 1; }
rm -f "$root/tmp/pyoomd.deb"
ls "$root"/usr/lib/pyoomd/pyoomd/__pycache__/*.pyc >/dev/null 2>&1 \
    || { echo "build: the postinst did not byte-compile /usr/lib/pyoomd" >&2; exit 1; }

# 4. Trim what a container never reads: package lists and caches, logs,
#    documentation but the copyright files, manuals, translations.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
       "$root"/var/log/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
       "$root"/usr/share/lintian "$root"/tmp/* "$root"/var/tmp/*
find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -path "$root/usr/share/doc/pyoomd/*" -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
: > "$root/etc/machine-id"
rm -f "$root/etc/resolv.conf" "$root/etc/hostname"   # the runtime provides them
mkdir -p "$root/run/pyoomd"

# 5. The image.
tar -C "$root" --numeric-owner -cf - . | podman import \
    --change 'ENTRYPOINT ["/usr/bin/pyoomd"]' \
    --change 'CMD ["run", "--config", "/etc/pyoomd/config.yaml"]' \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'WORKDIR /' \
    --change 'EXPOSE 9101/tcp' \
    --change "LABEL org.opencontainers.image.title=pyoomd org.opencontainers.image.version=$version" \
    --message "pyoomd $version: debootstrap $suite minbase + $(basename "$deb")" \
    - "$tag" >/dev/null
t3=$(date +%s)

size="$(podman image inspect --format '{{.Size}}' "$tag")"
echo "build: deb $((t1 - t0)) s, root $((t2 - t1)) s, install + import $((t3 - t2)) s" >&2
echo "size $size bytes ($(numfmt --to=iec-i --suffix=B "$size"))"
echo "$tag"
