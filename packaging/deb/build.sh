#!/usr/bin/env bash
# Build aiwg-service_<version>_<arch>.deb from this checkout: a private virtualenv at
# /usr/lib/aiwg-service built with Debian's own /usr/bin/python3, the user units in
# /usr/lib/systemd/user, and /usr/bin/{aiwg-service,aiwgctl} as symlinks into the venv.
#
# Usage: packaging/deb/build.sh [--install-build-deps] [--workdir DIR] [OUTDIR]
#   OUTDIR                the .deb goes here (default: dist/ in the checkout)
#   --install-build-deps  apt-get install whatever build dependency is missing (root only)
#   --workdir DIR         stage in DIR (emptied first, kept afterwards) instead of a temp dir
#
# Build dependencies (Debian packages): python3 python3-venv python3-dev gcc pkg-config libsystemd-dev.
# dpkg-deb and dpkg come with dpkg itself.  pip needs PyPI (or a configured mirror) for the Python deps.
set -euo pipefail

PREFIX=/usr/lib/aiwg-service          # where the venv lives on the installed system
PY=/usr/bin/python3                   # Debian's interpreter: the venv is tied to it
BUILD_DEPS=(python3 python3-venv python3-dev gcc pkg-config libsystemd-dev)

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
install_deps=0
workdir=""
outdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --install-build-deps) install_deps=1 ;;
    --workdir) [ $# -ge 2 ] || die "--workdir needs a directory"; workdir=$2; shift ;;
    --workdir=*) workdir=${1#--workdir=} ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$outdir" ] || die "only one OUTDIR, got '$outdir' and '$1'"; outdir=$1 ;;
  esac
  shift
done
outdir=${outdir:-$REPO/dist}

# --- build dependencies ------------------------------------------------------------------------
missing_deps() {
  local -a miss=()
  [ -x "$PY" ] || miss+=(python3)
  if [ -x "$PY" ]; then
    "$PY" -c 'import ensurepip, venv' 2>/dev/null || miss+=(python3-venv)
    local inc
    inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    [ -f "$inc/Python.h" ] || miss+=(python3-dev)
  fi
  command -v gcc >/dev/null || miss+=(gcc)
  command -v pkg-config >/dev/null || miss+=(pkg-config)
  if command -v pkg-config >/dev/null && ! pkg-config --exists libsystemd; then miss+=(libsystemd-dev); fi
  echo "${miss[@]}"
}
read -r -a missing <<<"$(missing_deps)"
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$install_deps" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "--install-build-deps needs root (missing: ${missing[*]})"
    say "installing build dependencies: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  else
    die "missing build dependencies: ${missing[*]}
  install them with: apt-get install ${BUILD_DEPS[*]}
  (or rerun as root with --install-build-deps)"
  fi
fi
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: this script builds on Debian and derivatives only"

# The venv links to the versioned interpreter (python3.11), so it keeps working when /usr/bin/python3
# moves to a newer minor version as long as python3.11 stays; Depends: pins python3 to this minor anyway.
PY=$(readlink -f "$PY")
read -r PYVER PYNEXT < <("$PY" -c 'import sys; v = sys.version_info; print(f"{v[0]}.{v[1]} {v[0]}.{v[1] + 1}")')
"$PY" -c 'import sys; assert sys.version_info >= (3, 11)' || die "$PY is Python $PYVER; aiwg-service needs >= 3.11"

# --- metadata ------------------------------------------------------------------------------------
VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
  "$REPO/pyproject.toml")
# PEP 440 pre-releases sort before the release; in Debian that is '~' (0.2.0rc1 -> 0.2.0~rc1).
DEBVERSION=$(printf '%s' "$VERSION" | sed -E 's/[.-]?(a|b|rc|dev)([0-9]*)/~\1\2/g')
ARCH=$(dpkg --print-architecture)
MAINTAINER="${DEBFULLNAME:-aiwg-service developers} <${DEBEMAIL:-aiwg-service@localhost}>"
# Reproducible timestamps: the last commit's date, unless SOURCE_DATE_EPOCH says otherwise.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
DEB="aiwg-service_${DEBVERSION}_${ARCH}.deb"
say "building $DEB with $PY (Python $PYVER)"

# --- staging -------------------------------------------------------------------------------------
if [ -n "$workdir" ]; then
  mkdir -p "$workdir"
  WORK=$(cd "$workdir" && pwd)
  rm -rf "${WORK:?}/stage" "${WORK:?}/src"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/aiwg-deb.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
fi
STAGE=$WORK/stage
VENV=$STAGE$PREFIX
mkdir -p "$STAGE"

# Build from a copy of just what the sdist needs, so the checkout gets no build/ or *.egg-info.
mkdir -p "$WORK/src"
cp -a "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/aiwg_service" "$REPO/units" "$WORK/src/"
find "$WORK/src" -name __pycache__ -type d -prune -exec rm -rf {} +

# A clean environment for the build interpreter: no caller's venv or PYTHONPATH leaks in.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYTHONSTARTUP
export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say "creating the venv at $PREFIX (staged in $STAGE)"
"$PY" -m venv "$VENV"
say "pip install aiwg-service $VERSION and its dependencies"
"$VENV/bin/python" -m pip install -q --no-compile --no-warn-script-location "$WORK/src"
# pip, setuptools and wheel only built the venv: the package ships none of them.
"$VENV/bin/python" -m pip uninstall -q -y pip setuptools wheel 2>/dev/null \
  || "$VENV/bin/python" -m pip uninstall -q -y pip
rm -f "$VENV"/bin/pip "$VENV"/bin/pip3* "$VENV"/bin/activate* "$VENV"/bin/Activate.ps1
SITE=$VENV/lib/python$PYVER/site-packages
# direct_url.json records where pip installed from (our temp copy): meaningless on the target.
for d in "$SITE"/aiwg_service-*.dist-info; do
  rm -f "$d/direct_url.json"
  sed -i '/direct_url\.json/d' "$d/RECORD"
done

# Make the venv correct at its final path: shebangs and pyvenv.cfg name the staging path.
say "rewriting $VENV -> $PREFIX"
while IFS= read -r -d '' f; do
  if grep -Iq . "$f" 2>/dev/null && grep -qF "$VENV" "$f"; then
    sed -i "s|$VENV|$PREFIX|g" "$f"
  fi
done < <(find "$VENV/bin" "$VENV/pyvenv.cfg" -maxdepth 1 -type f -print0)
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$VENV" -name '*.py[co]' -type f -delete
# Wheels ship extension modules with debug info (uvloop's alone is 13 MB); strip it as dh_strip would.
if command -v strip >/dev/null; then
  find "$VENV/lib" -type f \( -name '*.so' -o -name '*.so.[0-9]*' \) -exec strip --strip-unneeded {} +
fi

# No file may still name the build machine's paths (text or binary).
if leaks=$(grep -rlF -e "$WORK" "$STAGE"); then
  die "staging path still present in: $leaks"
fi

# --- /usr/bin, units, docs -----------------------------------------------------------------------
mkdir -p "$STAGE/usr/bin" "$STAGE/usr/lib/systemd/user"
for exe in aiwg-service aiwgctl; do
  [ -x "$VENV/bin/$exe" ] || die "pip did not install $exe"
  ln -sfn "../lib/aiwg-service/bin/$exe" "$STAGE/usr/bin/$exe"
done
for unit in aiwg.socket aiwg.service aiwg@.socket aiwg@.service aiwg-webhook.socket; do
  sed 's|@BINDIR@|/usr/bin|g' "$REPO/units/$unit" >"$STAGE/usr/lib/systemd/user/$unit"
done

DOC=$STAGE/usr/share/doc/aiwg-service
mkdir -p "$DOC"
cp "$REPO/packaging/README.md" "$DOC/README.packaging.md"
{
  printf '%s\n' "aiwg-service ($DEBVERSION) unstable; urgency=medium" "" \
    "  * aiwg-service $VERSION, with its Python dependencies in a private virtualenv" \
    "    at $PREFIX (built against python$PYVER)." "" \
    " -- $MAINTAINER  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$DOC/changelog.gz"

# copyright: the project, then one stanza per bundled distribution, from its own metadata.
"$VENV/bin/python" - "$REPO" "$PREFIX" "$PYVER" >"$DOC/copyright" <<'PYEOF'
"""Write a machine-readable debian/copyright for the package and everything bundled in its venv."""
import importlib.metadata as md
import pathlib
import sys

repo, prefix, pyver = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
site = f"{prefix.lstrip('/')}/lib/python{pyver}/site-packages"


def license_of(dist: md.Distribution) -> str:
    """The distribution's license in one short line: License-Expression, License, or its classifier."""
    meta = dist.metadata
    for value in (meta.get("License-Expression"), meta.get("License")):
        if value and "\n" not in value.strip() and len(value) < 80:
            return value.strip()
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return " or ".join(classifiers) or "see its license file"


print("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
print("Upstream-Name: aiwg-service")
print()
print("Files: *")
print("Copyright: the aiwg-service authors")
print("License: Expat")
texts = [p for p in ("LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING") if (repo / p).is_file()]
if texts:
    for line in (repo / texts[0]).read_text().splitlines():
        print(f" {line}" if line.strip() else " .")
else:
    print(" aiwg-service is distributed under the MIT (Expat) license, as its pyproject.toml declares.")
print()
print("Comment: Bundled Python distributions. Each one's full license text ships in its")
print(f" dist-info directory under /{site}.")
for dist in sorted(md.distributions(), key=lambda d: d.metadata["Name"].lower()):
    name = dist.metadata["Name"]
    if name.lower().replace("_", "-") == "aiwg-service":
        continue
    files = dist.files or []
    tops = sorted({f.parts[0] for f in files if f.parts and not f.parts[0].startswith("..")})
    print()
    print("Files: " + " ".join(f"{site}/{t}" for t in tops))
    print(f"Copyright: the {name} authors ({name} {dist.version})")
    print(f"License: {license_of(dist)}")
PYEOF

# --- DEBIAN/ -------------------------------------------------------------------------------------
mkdir -p "$STAGE/DEBIAN"
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat >"$STAGE/DEBIAN/control" <<CTRL
Package: aiwg-service
Version: $DEBVERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $INSTALLED_SIZE
Depends: python3 (>= $PYVER), python3 (<< $PYNEXT), python$PYVER, libsystemd0, systemd
Recommends: tmux
Section: devel
Priority: optional
Description: per-user service supervising projects for AI-augmented development
 aiwg-service watches project files, runs cron schedules, routes events over
 one bus, fires automation rules, and queues and runs AI coding-agent tasks
 under a concurrency limit, with a task store that survives reboots.  Clients
 talk to it in JSON-RPC 2.0 over a private Unix socket, e.g. with aiwgctl.
 .
 Nothing is started for anyone on installation.  Each user opts in with
   systemctl --user enable --now aiwg.socket
 .
 The Python dependencies are bundled in a private virtualenv in
 $PREFIX, built for python$PYVER; the package therefore depends on
 that exact Python minor version.
CTRL

cat >"$STAGE/DEBIAN/postinst" <<'SH'
#!/bin/sh
# Byte-compile the bundled venv (the .deb ships no .pyc; prerm removes them again).
# Enables nothing: each user opts in with `systemctl --user enable --now aiwg.socket`.
set -e
if [ "$1" = configure ]; then
  venv="$DPKG_ROOT/usr/lib/aiwg-service"
  # under `dpkg --root`, record the installed paths in the .pyc, not the root's
  "$venv/bin/python" -m compileall -q -j0 ${DPKG_ROOT:+-s "$DPKG_ROOT" -p /} "$venv/lib" >/dev/null 2>&1 \
    || echo "aiwg-service: byte-compiling $venv failed; it still works, only starts slower" >&2
  if [ -n "$2" ]; then
    echo "aiwg-service: upgraded from $2; running daemons keep the old code until each user runs" \
         "'systemctl --user daemon-reload && systemctl --user restart aiwg.service'" >&2
  fi
fi
exit 0
SH

cat >"$STAGE/DEBIAN/prerm" <<'SH'
#!/bin/sh
# Remove the bytecode postinst generated, so dpkg can remove the venv's directories.
set -e
case "$1" in
  remove|upgrade|deconfigure|failed-upgrade)
    find "$DPKG_ROOT/usr/lib/aiwg-service" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
    ;;
esac
exit 0
SH

cat >"$STAGE/DEBIAN/postrm" <<'SH'
#!/bin/sh
# Leftovers in the venv only (bytecode written after prerm ran).  Users' homes are never touched:
# state in ~/.local/state/aiwg, ~/.config/aiwg and any ~/.config/systemd/user symlinks stay theirs.
set -e
case "$1" in
  remove|purge)
    venv="$DPKG_ROOT/usr/lib/aiwg-service"
    if [ -d "$venv" ]; then
      find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
      find "$venv" -depth -type d -empty -delete 2>/dev/null || true
    fi
    ;;
esac
exit 0
SH
chmod 0755 "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/prerm" "$STAGE/DEBIAN/postrm"

# Normalize modes (umask-independent) and timestamps, then checksums for `dpkg --verify`.
find "$STAGE" -type d -exec chmod 0755 {} +
find "$STAGE" -path "$STAGE/DEBIAN" -prune -o -type f ! -perm -u+x -exec chmod 0644 {} +
find "$STAGE" -path "$STAGE/DEBIAN" -prune -o -type f -perm -u+x -exec chmod 0755 {} +
find "$VENV/lib" -type f \( -name '*.so' -o -name '*.so.[0-9]*' \) -exec chmod 0644 {} +   # libraries are not executables
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
  | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/md5sums"
find "$STAGE" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"

mkdir -p "$outdir"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$outdir/$DEB" >/dev/null
say "built $(cd "$outdir" && pwd)/$DEB ($(du -h "$outdir/$DEB" | cut -f1), installed $((INSTALLED_SIZE / 1024)) MiB)"
echo "$(cd "$outdir" && pwd)/$DEB"
